"""One command line for every distilling method: build (distil, or find in the artifact cache) the student of
``method[@variant]`` for a suite — what `make bench` does before it evaluates — and print where it is.

    python -m methods.<method>.distill --suite libero_object [--variant keep6] [--set steps=4000] [--debug]
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def _where(policy: Any) -> str:
    for attr in ("folder", "artifact"):
        if getattr(policy, attr, None) is not None:
            return str(getattr(policy, attr))
    manifest = getattr(policy, "manifest", None) or {}
    return str(manifest.get("key") or type(policy).__name__)


def main(method: str, argv: list[str] | None = None, doc: str | None = None) -> int:
    from harness.cli import _parse_overrides
    from harness.runner import build_policy
    from harness.specs import RunSpec

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None else f"python -m methods.{method}.distill"
    ap = argparse.ArgumentParser(prog=prog,
                                 description=(doc or __doc__ or "").strip().split("\n")[0])
    ap.add_argument("--suite", required=True)
    ap.add_argument("--variant", default=None, help="a variant of the method (see its README), e.g. keep6")
    ap.add_argument("--debug", action="store_true", help="the method's debug config (trains in seconds)")
    ap.add_argument("--cache-dir", default=".cache")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. steps=4000 (threads/minutes do not change the cache key)")
    a = ap.parse_args(argv)
    mid = method + (f"@{a.variant}" if a.variant else "")
    built = build_policy(RunSpec(method=mid, suite=a.suite, debug=a.debug, cache_dir=a.cache_dir,
                                 overrides=_parse_overrides(a.set)))
    print(f"student ready: {_where(built.policy)}")
    return 0
