"""Command line shared by the ``ot_*.py`` benchmark scripts: --suite, --out (CSV, written atomically),
--device, --quiet; prints the rows (and a summary) as a table and which assignment kernel ran."""
import argparse

import pandas as pd

from dpmot_bench.io import write_text
from dpmot_bench.ot import native
from dpmot_bench.provenance import provenance


def main(benchmark, doc, summary=None):
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--suite", default="quick", choices=["quick", "full"])
    parser.add_argument("--out", required=True, help="CSV file for the rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    rows = benchmark(suite=args.suite, device=args.device, progress=not args.quiet)
    frame = pd.DataFrame(rows).assign(**{k: str(v) for k, v in provenance(device=args.device).items()
                                         if k in ("git_commit", "torch", "time_utc", "cpu_threads")},
                                      assignment_kernel=native.status())
    write_text(args.out, frame.to_csv(index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.drop(columns=["git_commit", "torch", "time_utc", "assignment_kernel"]).to_string(index=False))
        print(native.status())
        if summary is not None:
            print(pd.DataFrame(summary(rows)).to_string(index=False))
