#!/usr/bin/env bash
# CI regression gate (called by .ci/run): a fresh mock run gated against the committed baseline
# results/ci-baseline/ (a mock-v1 / mock / quick run folder written by the same command).
#
# Success: the mock is deterministic per episode seed, so a healthy run reproduces the baseline's
# per-episode outcomes exactly; any significant loss (exact McNemar p < 0.05) fails.
# FLOPs ratio vs the suite's teacher (the reference VLA): counted, deterministic: 2% tolerance.
# Speedup vs the teacher on a shared 2-core machine (measured at load average ~20): thread-CPU-time speedup
# 34.0-36.8x (stable: 50% tolerance); wall-clock speedup 34-299x (preemption: 90% tolerance, so only a gross
# regression fails it). docs/reporting.md explains. Regenerate the baseline after an intended change of the
# mock or of the suite's teacher (the gate refuses ratios against a different teacher):
#   rm -rf results/ci-baseline && .venv/bin/vla-bench bench --method mock --suite mock-v1 --profile quick \
#     --profile-calls 30 --results results/ci-baseline
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN/vla-bench" bench --method mock --suite mock-v1 --profile quick --profile-calls 30 --results "$TMP" \
  --quiet >/dev/null
"$BIN/vla-bench" gate --baseline results/ci-baseline --candidate "$TMP" --alpha 0.05 \
  --latency-tol 0.9 --cpu-tol 0.5 --flops-tol 0.02
