"""What the plant's call costs at each detection target: the fewest validation false alarms of
each trained model's decision search at 80, 85, 90 and 95% of the defective parts caught where
the defect is (and counting any call), read from the runs' kept validation predictions.

The report's decision asks for 95% where the defect is, plus a margin; when the last few percent
of the defective parts are found only by the most permissive rule, its false alarms jump to
nearly every good part. This table shows where that jump happens. Validation only: the test split
is not read, and nothing is chosen here.

    python benchmarks/bench_operating_points.py [--runs data/default/runs]

Writes ``benchmarks/results/operating_points.json`` and prints its table.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scratch_utils.decision import false_alarms_at  # noqa: E402
from scratch_utils.evaluation import run_predictions  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.profiles import get_profile, outputs  # noqa: E402
from scratch_utils.runs import load_run_config  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = (0.80, 0.85, 0.90, 0.95)
MODELS = ("encoder_decoder", "unet", "unet_bce", "unet_dice", "vgg16_unet", "unet_squashed")


def operating_points(run: Path) -> dict:
    val = run_predictions(run, "val")
    rule = load_run_config(run).get("decision", "regions")
    return {"rule": rule, "defective_parts": int(val.is_defective.sum()), "good_parts": int((~val.is_defective).sum()),
            # None: no decision of the search reaches the target (not even one flagging every part)
            "located": {f"{t:.2f}": false_alarms_at(val, rule, t, unreached=None) for t in TARGETS},
            "any_call": {f"{t:.2f}": false_alarms_at(val, rule, t, located=False, unreached=None) for t in TARGETS}}


def percent_or_unreached(value: float | None) -> str:
    return "not reached" if value is None else f"{100 * value:.0f}%"


def markdown_table(result: dict) -> str:
    lines = ["| model | " + " | ".join(f"{100 * t:.0f}% caught where the defect is" for t in TARGETS)
             + " | 95% caught anywhere |", "|" + "---|" * (len(TARGETS) + 2)]
    for name, row in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(percent_or_unreached(row["located"][f"{t:.2f}"]) for t in TARGETS)
                     + f" | {percent_or_unreached(row['any_call']['0.95'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=outputs(get_profile("default")).runs)
    args = parser.parse_args()
    found = {name: operating_points(args.runs / name) for name in MODELS if (args.runs / name / "metrics.json").is_file()}
    if not found:
        raise SystemExit(f"no trained runs under {args.runs}: run `make report` first")
    first = next(iter(found.values()))
    result = {"benchmark": "operating points", "scored_on": "validation split, photo resolution",
              "cell": "fewest false alarms on good parts at the detection target", "runs": str(args.runs),
              "defective_parts": first["defective_parts"], "good_parts": first["good_parts"], "models": found}
    out = HERE / "results" / "operating_points.json"
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
