"""Run the bad-input table (``bad_inputs.py``) and print how betty_func answers each mistake.

``python benchmarks/check_errors.py`` prints one line per case and the counts of ``clear``
(a TypeError / ValueError in the ``api(args): what. Got X. How to fix.`` layout, before any
update), ``late`` (such an error after updates ran), ``unclear`` (another exception or layout)
and ``silent`` (no error). ``--json FILE`` writes them; ``--quiet`` prints the counts alone.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import CASES, verdict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the verdicts to this file")
    ap.add_argument("--quiet", action="store_true", help="print the counts alone")
    args = ap.parse_args()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, case in enumerate(CASES):
            with tempfile.TemporaryDirectory() as tmp:
                v, msg = verdict(case, Path(tmp))
            rows.append({"area": case.area, "case": case.what, "verdict": v, "message": msg})
            if not args.quiet:
                print(f"{v:8s} {case.area:15s} {case.what:45s} {msg[:150]}")
    counts = collections.Counter(r["verdict"] for r in rows)
    print(f"{len(rows)} bad inputs: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in
                                                   ("clear", "late", "unclear", "silent")))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
