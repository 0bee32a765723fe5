#!/usr/bin/env bash
# Headless Chromium for the report tests (tests/test_reports.py, marker "browser") and `make report-screenshot`.
# Debian's `chromium` package; no npm, no downloaded browser bundle. Idempotent: does nothing when present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium present: $(command -v chromium || command -v chromium-browser)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium
command -v chromium
