#!/usr/bin/env bash
# robosuite pulls opencv-python, which fails to import without libGL; swap in the headless build (same API).
set -euo pipefail
BIN=$1
if "$BIN/pip" show opencv-python >/dev/null 2>&1; then
  ver=$("$BIN/pip" show opencv-python | awk '/^Version:/{print $2}')
  "$BIN/pip" uninstall -q -y opencv-python
  "$BIN/pip" install -q "opencv-python-headless==$ver" torch==2.13.0
fi
# Both wheels ship the same cv2/ files: uninstalling opencv-python deletes them even when the headless build of
# the same version is already "installed" (pip then says "already satisfied"). Reinstall it when cv2 is broken.
if ! "$BIN/python" -c "import cv2" >/dev/null 2>&1; then
  ver=$("$BIN/pip" show opencv-python-headless 2>/dev/null | awk '/^Version:/{print $2}')
  "$BIN/pip" install -q --force-reinstall --no-deps "opencv-python-headless${ver:+==$ver}"
fi
