#!/usr/bin/env bash
# robosuite pulls opencv-python, which fails to import without libGL; swap in the headless build (same API).
set -euo pipefail
BIN=$1
if "$BIN/pip" show opencv-python >/dev/null 2>&1; then
  ver=$("$BIN/pip" show opencv-python | awk '/^Version:/{print $2}')
  "$BIN/pip" uninstall -q -y opencv-python
  "$BIN/pip" install -q "opencv-python-headless==$ver" torch==2.13.0
fi
