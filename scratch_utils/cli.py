"""Command line: ``python -m scratch_utils <command>`` runs what the notebooks run."""
from __future__ import annotations

import argparse
import json
import sys


def _synth(args) -> int:
    from .synthetic import generate
    summary = generate(args.out, count=args.count, seed=args.seed, width=args.width,
                       height=args.height, workers=args.workers)
    print(f"wrote {summary['count']} parts ({summary['defective']} defective, "
          f"{summary['good']} good) to {summary['out']}")
    return 0


def _prepare(args) -> int:
    from .data import prepare
    report = prepare(args.source, args.out, fmt=args.format, size=args.size, fit=args.fit,
                     seed=args.seed, workers=args.workers)
    counts = report["counts"]
    for entry in report["skipped"]:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    for warning in report["warnings"]:
        print(f"warning {warning}", file=sys.stderr)
    rate = report["images_per_second"]
    print(f"{report['format']}: prepared {counts['prepared']}, up to date {counts['up_to_date']}, "
          f"skipped {counts['skipped']} -> {counts['total']} pairs "
          f"({counts['defective']} defective, {counts['good']} good; train {counts['train']}, "
          f"val {counts['val']}, test {counts['test']}) in {report['seconds']:.1f} s"
          + (f" ({rate:.0f} images/s)" if rate else "") + f" -> {report['out']}")
    return 0


def _report(args) -> int:
    from .notebooks import run_all
    run_all(profile=args.profile, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scratch_utils",
                                     description="Car-paint scratch segmentation course tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate the synthetic AIHub-format car-paint set")
    synth.add_argument("--out", required=True, help="folder for images/ and labels/")
    synth.add_argument("--count", type=int, default=600)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--width", type=int, default=1280)
    synth.add_argument("--height", type=int, default=720)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.set_defaults(run=_synth)

    prep = commands.add_parser("prepare", help="labelled photos -> masks, resized pairs, splits")
    prep.add_argument("source", help="folder with the photos and labels (never modified)")
    prep.add_argument("--out", required=True, help="output folder (outside SOURCE)")
    prep.add_argument("--format", default="auto", choices=["auto", "aihub", "coco", "pairs"])
    prep.add_argument("--size", type=int, default=128, help="side of the square output")
    prep.add_argument("--fit", default="stretch", choices=["stretch", "pad"],
                      help="stretch to the square (the seeds) or keep the aspect ratio and pad")
    prep.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prep.set_defaults(run=_prepare)

    report = commands.add_parser("report", help="run every notebook and keep its rendered outputs")
    report.add_argument("--profile", default="default", choices=["smoke", "default", "full"])
    report.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    report.set_defaults(run=_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .data import PrepareError
    try:
        return args.run(args)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing is half-written", file=sys.stderr)
        return 130
