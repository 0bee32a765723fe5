from harness.server.cli import main

raise SystemExit(main())
