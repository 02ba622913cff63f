"""The ``dpmot`` command (also ``python -m dpmot_bench``).

Every sub-command takes ``--seed``, ``--device`` and ``--quiet``. Bad input ends with one line on stderr
and exit status 2, and nothing half-written on disk; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _non_negative_seed(args) -> None:
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")


# ------------------------------------------------------------------------------------------ commands
def cmd_datasets(args) -> int:
    from .data import dataset_names, get_dataset

    datasets = [get_dataset(name) for name in dataset_names()]
    if args.json:
        print(json.dumps([{"name": d.name, "dim": d.dim, "shape": list(d.shape), "classes": d.n_classes,
                           "description": d.description} for d in datasets], indent=2))
    else:
        width = max(len(d.name) for d in datasets)
        for d in datasets:
            print(f"{d.name:<{width}}  {d.description}")
    return 0


# [cmd fit-ot]

# [cmd sample]

# [cmd train]

# [cmd check-bound]

# [cmd bench report]
def _suite_and_out(args):
    from pathlib import Path

    from .bench.suites import get_suite
    from .io import ensure_writable_dir

    suite = get_suite(args.suite)
    out = Path(args.out or Path("reports") / suite.name)
    ensure_writable_dir(out)
    return suite, out


def cmd_bench(args) -> int:
    from .bench.runner import run_suite
    from .io import write_json

    suite, out = _suite_and_out(args)
    rows = run_suite(suite, out, resume=args.resume, device=args.device, progress=not args.quiet)
    write_json(out / "work" / "rows.json", rows)
    print(json.dumps({"suite": suite.name, "rows": len(rows), "results": str(out / "work")}))
    return 0


def cmd_report(args) -> int:
    from .report.build import build_report

    suite, out = _suite_and_out(args)
    index = build_report(suite, out, resume=args.resume, device=args.device, progress=not args.quiet)
    print(index)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="dpmot", description=__doc__.splitlines()[0] + " DPM-OT benchmarks and checks.")
    parser.add_argument("--version", action="version", version=f"dpmot-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = _common(sub.add_parser("datasets", help="list the dataset names with a one-line description"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_datasets)

    # [parser fit-ot]

    # [parser sample]

    # [parser train]

    # [parser check-bound]

    # [parser bench report]
    for name, run, text in (("bench", cmd_bench, "run a benchmark suite (resumable) into OUT/work"),
                            ("report", cmd_report, "run a suite and write OUT/index.md, figures, results.csv/json")):
        p = _common(sub.add_parser(name, help=text, description=text))
        p.add_argument("--suite", default="quick", help="quick (default; < 10 min on 2 cores), full, or tiny")
        p.add_argument("--out", help="output directory (default reports/SUITE)")
        p.add_argument("--resume", action="store_true", help="keep finished cells of an interrupted run")
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _non_negative_seed(args)
        args.device = resolve_device(args.device)
        return args.run(args)
    except InputError as err:
        print(f"dpmot {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dpmot {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
