"""Where pooled Dice comes from: per defect class (a photo stem's first word, ``blowhole_...``),
the defect pixels' share of the split and the pooled and per-photo Dice of each diagnosis run on
the validation split, at the run's own mask threshold.

    python benchmarks/diagnosis_by_class.py --set magnetic_tile --variants baseline squash scale_0.25

Writes ``benchmarks/results/diagnosis_<set>_by_class.json`` and prints its table.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from scratch_utils.evaluation import run_predictions  # noqa: E402
from scratch_utils.profiles import data_root  # noqa: E402

HERE = Path(__file__).resolve().parent


def by_class(run: Path) -> dict:
    """Per class: photos, share of the split's defect pixels, pooled Dice, mean Dice per photo."""
    predictions = run_predictions(run, "val")
    threshold = json.loads((run / "operating_point.json").read_text())["mask_threshold"]
    k = min(range(len(predictions.thresholds)), key=lambda j: abs(predictions.thresholds[j] - threshold))
    s = predictions.stats
    tp, fp, positives = s["tp"][:, k], s["fp"][:, k], s["positives"]
    classes = np.array([row["stem"].split("_")[0] for row in predictions.rows])
    found = {}
    for name in sorted(set(classes)):
        mine = classes == name
        fn = positives[mine] - tp[mine]
        per_photo = 2 * tp[mine] / np.maximum(2 * tp[mine] + fp[mine] + fn, 1)
        found[name] = {"photos": int(mine.sum()), "defect_pixel_share": round(float(positives[mine].sum() / positives.sum()), 4),
                       "pooled_dice": round(float(2 * tp[mine].sum() / max(1, 2 * tp[mine].sum() + fp[mine].sum() + fn.sum())), 3),
                       "dice_per_photo": round(float(per_photo.mean()), 3)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True)
    parser.add_argument("--variants", nargs="*", default=["baseline", "squash", "scale_0.25"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    args = parser.parse_args()
    runs = data_root() / "diagnosis" / args.set / "runs"
    result = {f"{v}-s{seed}": by_class(runs / f"{v}-s{seed}") for v in args.variants for seed in args.seeds
              if (runs / f"{v}-s{seed}" / "metrics.json").is_file()}
    out = HERE / "results" / f"diagnosis_{args.set}_by_class.json"
    out.write_text(json.dumps({"benchmark": "diagnosis by class", "set": args.set, "split": "val", "runs": result},
                              indent=1) + "\n")
    classes = sorted({c for r in result.values() for c in r if c != "free"})
    print("| run | " + " | ".join(f"{c} (share of defect pixels)" for c in classes) + " |")
    print("|---|" + "---|" * len(classes))
    for name, r in result.items():
        print(f"| {name} | " + " | ".join(f"{r[c]['pooled_dice']:.2f} ({100 * r[c]['defect_pixel_share']:.0f}%)"
                                          for c in classes) + " |")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
