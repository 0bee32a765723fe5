"""``vla-bench serve`` / ``python -m harness.server``: serve a method's policy over the policy-server protocol."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_MAX_MESSAGE_MB = 16.0  # = protocol.DEFAULT_MAX_MESSAGE_BYTES; not imported: `vla-bench` must start without msgpack

TOKEN_ENV = "VLA_BENCH_SERVER_TOKEN"


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--method", "-m", required=True, help="method id to serve, e.g. mock or fastv@keep0.5")
    s.add_argument("--suite", "-s", required=True, help="suite id the policy is built for (config, teacher)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; anything else exposes an unauthenticated "
                        f"service unless {TOKEN_ENV} is set — see docs/scaleout.md)")
    s.add_argument("--port", "-P", type=int, default=8765, help="TCP port (0 = any free port, printed at start)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--debug", action="store_true", help="the method's debug config")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method config override")
    s.add_argument("--max-batch", type=int, default=1, help="infer requests of parallel sessions per policy call")
    s.add_argument("--batch-window-ms", type=float, default=2.0, help="longest wait for a batch to fill")
    s.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_MB,
                   help="largest accepted message; larger ones close the connection (code 1009)")
    s.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (a parent that spawned us)")
    s.add_argument("--cache-dir", default=".cache")


def cmd_serve(a: argparse.Namespace) -> int:
    from harness.cli import _parse_overrides
    from harness.interfaces import ConfigError
    from harness.server.server import serve_policy
    from harness.specs import RunSpec

    if not 0 <= a.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {a.port}")
    if a.max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {a.max_batch}")
    if a.batch_window_ms < 0:
        raise ConfigError(f"--batch-window-ms must be >= 0, got {a.batch_window_ms}")
    if not 0 < a.max_message_mb <= 1024:
        raise ConfigError(f"--max-message-mb must be in (0, 1024], got {a.max_message_mb}")
    token = os.environ.get(TOKEN_ENV) or None
    if not _is_loopback(a.host):
        print(f"vla-bench serve: WARNING: binding {a.host}: reachable from other machines; "
              + ("clients must send the token" if token else f"NO authentication ({TOKEN_ENV} unset)")
              + "; traffic is not encrypted (use an SSH tunnel)", file=sys.stderr)
    spec = RunSpec(method=a.method, suite=a.suite, device=a.device, threads=a.threads, debug=a.debug,
                   overrides=_parse_overrides(a.set), cache_dir=a.cache_dir)
    try:
        serve_policy(spec, host=a.host, port=a.port, max_batch=a.max_batch, batch_window_ms=a.batch_window_ms,
                     max_message_bytes=int(a.max_message_mb * 2**20), token=token, watch_stdin=a.watch_stdin)
    except OSError as e:
        print(f"vla-bench serve: error: cannot listen on {a.host}:{a.port}: {e}", file=sys.stderr)
        return 1
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_serve_command(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve a method's policy to remote clients (method `remote`)")
    add_arguments(s)
    s.set_defaults(fn=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    from harness.cli import EXIT_USAGE
    from harness.interfaces import ConfigError
    from harness.registry import UnknownNameError

    p = argparse.ArgumentParser(prog="python -m harness.server", description=__doc__.split("\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        return cmd_serve(a)
    except (UnknownNameError, ConfigError) as e:
        print(f"vla-bench serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE
