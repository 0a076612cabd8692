"""Can the photo show the defect its label marks? The contrast of every labelled defect against
the paint around it, and what a trained run's validation calls make of the faintest.

A label marks a defect; the photo may barely show it. On the synthetic set a light scratch can be
drawn on white paint, or a dark one on black, a few 8-bit levels from the paint around it,
under the camera's noise: a part no model (and no inspector) can be asked to catch. This script
measures, for every labelled defect of a split at the photo's own resolution, its *contrast*: how
far the median colour of its pixels lies from the median colour of a ring 2-6 px outside it (other
defects left out), in 8-bit levels, and that contrast over the ring's own spread (robust
standard deviation, *CNR*). A part is as visible as its most visible defect.

With a trained run (``--run``), each defective validation part also gets the highest probability
threshold at which the run's mask still has a region within 2 px of the defect (the loosest
call that locates it), and the false alarms at 95% caught where the defect is are read again
with the faintest parts left out: how much of the jump at 95% the faint labels account for.
Validation only; nothing is chosen here.

With ``--visible``, the default profile's synthetic set is generated again with every defect
drawn at least ``synthetic.VISIBLE_LEVELS`` from its paint (``generate(visible=True)``: the same
parts, shapes and labels; only the faint defects change tone or contrast), prepared, and the
default profile's U-Net trained on it (under ``data/visibility/``, reused); both runs' validation
calls are compared at 80-95% caught where the defect is.

    python benchmarks/bench_visibility.py [--prepared FOLDER] [--split val] [--run data/default/runs/unet] [--visible]

Writes ``benchmarks/results/visibility_<folder>_<split>.json`` and prints its summary.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage.morphology import disk  # noqa: E402

from scratch_utils.dataset import Prepared  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.photos import open_photo  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RING = (2, 6)                 # the paint around a defect: 2-6 px outside its label
FAINT_LEVELS = (2, 4, 8)      # 8-bit levels: under the camera's noise (about 2), and twice and four times it


def defect_contrast(photo: np.ndarray, defect: np.ndarray, others: np.ndarray | None = None) -> dict:
    """One labelled defect's contrast in a photo (0-255, RGB or grey): ``levels``, the distance
    between the median colours of its pixels and of the ring 2-6 px outside it (``others``, other
    defects, left out of the ring), so a dark scratch on red paint of the same brightness counts;
    ``cnr``, that over the ring's robust spread (1.4826 MAD per channel, their root sum of squares)."""
    defect = np.asarray(defect, bool)
    photo = np.asarray(photo, np.float32)
    photo = photo[..., None] if photo.ndim == 2 else photo
    rows, cols = np.flatnonzero(defect.any(axis=1)), np.flatnonzero(defect.any(axis=0))
    pad = RING[1] + 1
    box = (slice(max(0, rows[0] - pad), rows[-1] + pad + 1), slice(max(0, cols[0] - pad), cols[-1] + pad + 1))
    inside, near = defect[box], photo[box]
    ring = ndimage.binary_dilation(inside, disk(RING[1])) & ~ndimage.binary_dilation(inside, disk(RING[0]))
    if others is not None:
        ring &= ~np.asarray(others, bool)[box]
    if not ring.any():
        return {"levels": float("nan"), "cnr": float("nan"), "pixels": int(inside.sum())}
    background = near[ring]
    centre = np.median(background, axis=0)
    levels = float(np.linalg.norm(np.median(near[inside], axis=0) - centre))
    spread = float(np.linalg.norm(1.4826 * np.median(np.abs(background - centre), axis=0)))
    return {"levels": levels, "cnr": levels / max(spread, 0.5), "pixels": int(inside.sum())}


def part_visibility(prepared: Prepared, row: dict) -> dict:
    """A defective part's most visible labelled defect (each label annotation is one defect)."""
    image = prepared.truths.images[row["stem"]]
    defects = prepared.truths.defects(row["stem"])
    photo = np.asarray(open_photo(prepared.source_photo(row), declared_size=(image["width"], image["height"]))[0],
                       np.float32)
    union = np.logical_or.reduce(defects) if defects else None
    found = [defect_contrast(photo, d, union & ~d) for d in defects]
    found = [f for f in found if np.isfinite(f["levels"])]
    best = max(found, key=lambda f: f["levels"]) if found else {"levels": float("nan"), "cnr": float("nan"), "pixels": 0}
    return {"stem": row["stem"], "defects": len(defects), **best}


def loosest_located(predictions) -> np.ndarray:
    """Per photo: the highest threshold of the grid at which a region of the mask lies within
    2 px of the true defect (0 where none does at any threshold)."""
    near = predictions.stats["near_area"] > 0
    thresholds = np.asarray(predictions.thresholds, float)
    return np.where(near, thresholds[None, :], 0.0).max(axis=1)


def without_parts(predictions, keep: np.ndarray):
    """The same predictions with only the photos ``keep`` marks (stats rows sliced alike)."""
    from dataclasses import replace
    stats = {key: value[keep] for key, value in predictions.stats.items()}
    return replace(predictions, rows=[r for r, k in zip(predictions.rows, keep) if k],
                   probabilities=[p for p, k in zip(predictions.probabilities, keep) if k], stats=stats,
                   part_scores=None if predictions.part_scores is None else predictions.part_scores[keep])


def run_rows(run: Path, split: str, visibility: dict) -> dict:
    """What the run's calls make of the faint parts, and its false alarms at 95% located with them
    left out, under each faintness bound."""
    from scratch_utils.decision import false_alarms_at
    from scratch_utils.evaluation import run_predictions
    predictions = run_predictions(run, split)
    defective = predictions.is_defective
    loosest = loosest_located(predictions)
    parts = []
    for row, threshold, is_defective in zip(predictions.rows, loosest, defective):
        if is_defective:
            parts.append({**visibility[row["stem"]], "loosest_located_threshold": float(threshold)})
    levels = np.array([visibility[r["stem"]]["levels"] if d else np.inf for r, d in zip(predictions.rows, defective)])
    bounds = {}
    for bound in (0, *FAINT_LEVELS):
        keep = ~(defective & (levels < bound))
        kept = without_parts(predictions, keep)
        bounds[str(bound)] = {"defective_parts": int(kept.is_defective.sum()),
                              "false_alarms_at_95": false_alarms_at(kept, "regions", unreached=None),
                              "false_alarms_at_90": false_alarms_at(kept, "regions", 0.90, unreached=None)}
    order = np.argsort([p["loosest_located_threshold"] for p in parts])
    hardest = [parts[k] for k in order[:max(1, round(0.05 * len(parts)) + 1)]]
    return {"run": str(run), "split": split, "parts": parts, "hardest": hardest,
            "spearman_levels_vs_loosest": spearman([p["levels"] for p in parts],
                                                   [p["loosest_located_threshold"] for p in parts]),
            "faint_parts_left_out": bounds}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def summary(rows: list[dict]) -> dict:
    levels = np.array([r["levels"] for r in rows], float)
    cnr = np.array([r["cnr"] for r in rows], float)
    return {"defective_parts": len(rows),
            "levels_percentiles": {str(q): float(np.nanpercentile(levels, q)) for q in (2, 5, 10, 25, 50)},
            "under_levels": {str(t): int(np.sum(levels < t)) for t in FAINT_LEVELS},
            "under_cnr_1": int(np.sum(cnr < 1))}


def visible_runs(profile, seeds) -> tuple[Path, dict]:
    """The default profile's set generated with visible defects, prepared at the automatic scale,
    and the profile's U-Net trained on it per seed: (prepared folder, {seed: run}), reused."""
    from scratch_utils import synthetic
    from scratch_utils.preparation import prepare
    from scratch_utils.profiles import data_root
    from scratch_utils.train import train_or_reuse
    root = data_root() / "visibility"
    width, height = profile.photo_size
    for split, spec in profile.synthetic.items():
        synthetic.generate(root / "synthetic-visible" / split, count=spec.count, seed=spec.seed, width=width,
                           height=height, good_fraction=spec.good_fraction, progress=False, visible=True)
    prepared = root / "prepared-visible-scaled"
    prepare(root / "synthetic-visible", prepared, progress=False)
    return prepared, {seed: train_or_reuse(prepared, root / "runs" / f"visible-s{seed}",
                                           profile.train_config("unet", seed=seed), verbose=2) for seed in seeds}


def generated_runs(profile, seeds, run: Path) -> dict:
    """The same U-Net on the set as generated, per seed: ``run`` (the report's) for seed 0."""
    from scratch_utils.dataset import ensure_prepared
    from scratch_utils.profiles import data_root
    from scratch_utils.train import train_or_reuse
    runs = {0: run} if 0 in seeds else {}
    others = [seed for seed in seeds if seed != 0]
    if others:
        prepared = ensure_prepared(profile, progress=False)
        for seed in others:
            runs[seed] = train_or_reuse(prepared, data_root() / "visibility" / "runs" / f"as-generated-s{seed}",
                                        profile.train_config("unet", seed=seed), verbose=2)
    return runs


def validation_calls(run: Path) -> dict:
    """A run's validation scores and its fewest false alarms at each detection target."""
    import json
    from bench_operating_points import operating_points
    val = json.loads((run / "metrics.json").read_text())["val"]
    return {**operating_points(run), **{key: val[key] for key in ("dice", "dice_defective_parts", "auroc")}}


def percent(value) -> str:
    return "not reached" if value is None else f"{value:.0%}"


def markdown_table(results: list[dict]) -> str:
    """One row per set and run: how many parts are faint, whether contrast orders what the run
    locates, and its false alarms at 90% / 95% located with the faint parts left out."""
    lines = ["| set and run | defective parts | most visible defect under 4 / 8 levels | contrast against the loosest "
             "threshold that locates the part (Spearman) | false alarms at 90% / 95% located: every part | "
             "without parts under 4 levels | without parts under 8 levels |", "|" + "---|" * 7]
    for result in results:
        run, s = result["run"], result["summary"]
        cells = [f"{percent(b['false_alarms_at_90'])} / {percent(b['false_alarms_at_95'])}"
                 for b in (run["faint_parts_left_out"][key] for key in ("0", "4", "8"))]
        lines.append(f"| {result['title']} | {s['defective_parts']} | {s['under_levels']['4']} / {s['under_levels']['8']} | "
                     f"{run['spearman_levels_vs_loosest']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def visible_table(result: dict) -> str:
    """The U-Net trained and decided on the set as generated and with visible defects (validation;
    means over seeds, ranges in brackets)."""
    from bench_real import cell

    def rates(values):
        reached = [v for v in values if v is not None]
        if len(reached) == len(values):
            return cell(values, True)
        return "not reached" + (f" ({len(reached)} of {len(values)} seeds: {cell(reached, True)})" if reached else "")

    lines = ["| synthetic set | seeds | most visible defect under 4 / 8 levels | val Dice | AUROC | false alarms at "
             "80% / 85% / 90% / 95% caught where the defect is | at 95% caught anywhere |", "|" + "---|" * 7]
    summaries = {"as generated": result["summary"], "visible defects": result["visible"]["summary"]}
    for name, runs in result["visible"]["calls"].items():
        s = summaries[name]
        lines.append(f"| {name} | {len(runs)} | {s['under_levels']['4']} / {s['under_levels']['8']} of {s['defective_parts']} | "
                     f"{cell([r['dice'] for r in runs])} | {cell([r['auroc'] for r in runs])} | "
                     + " / ".join(rates([r["located"][t] for r in runs]) for t in runs[0]["located"])
                     + f" | {rates([r['any_call']['0.95'] for r in runs])} |")
    return "\n".join(lines)


def main() -> None:
    from scratch_utils.dataset import prepared_folder
    from scratch_utils.profiles import get_profile, outputs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=None,
                        help="a prepared folder (default: the default profile's synthetic set)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--run", type=Path, default=None, help="a run trained on that folder (default: its unet)")
    parser.add_argument("--visible", action="store_true",
                        help="also train the U-Net on the set generated with visible defects and compare")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="training seeds of that comparison")
    parser.add_argument("--name", default=None, help="names the JSON file (default: the folder's)")
    parser.add_argument("--title", default=None, help="its row in the table (default: the name)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    profile = get_profile("default")
    folder = args.prepared or prepared_folder(profile, None)
    prepared = Prepared.open(folder)
    rows = [part_visibility(prepared, row) for row in prepared.split(args.split) if row["quality"] == "defective"]
    visibility = {r["stem"]: r for r in rows}
    result = {"benchmark": "visibility of the labelled defects", "prepared": str(folder), "split": args.split,
              "ring_px": list(RING), "summary": summary(rows)}
    run = args.run or (outputs(profile).runs / "unet" if args.prepared is None else None)
    if run is not None and (run / "metrics.json").is_file():
        result["run"] = run_rows(run, args.split, visibility)
    else:
        result["parts"] = rows
    if args.visible and "run" in result:
        visible_prepared, visible = visible_runs(profile, args.seeds)
        generated = generated_runs(profile, args.seeds, run)
        seen = Prepared.open(visible_prepared)
        result["visible"] = {
            "prepared": str(visible_prepared), "seeds": args.seeds,
            "summary": summary([part_visibility(seen, row) for row in seen.split(args.split)
                                if row["quality"] == "defective"]),
            "calls": {"as generated": [{"seed": seed, "run": str(r), **validation_calls(r)} for seed, r in generated.items()],
                      "visible defects": [{"seed": seed, "run": str(r), **validation_calls(r)} for seed, r in visible.items()]}}
    s = result["summary"]
    print(f"{s['defective_parts']} defective {args.split} parts; most visible defect "
          + ", ".join(f"under {t} levels: {n}" for t, n in s["under_levels"].items())
          + f"; CNR under 1: {s['under_cnr_1']}")
    if "run" in result:
        r = result["run"]
        print(f"Spearman(contrast, loosest locating threshold) = {r['spearman_levels_vs_loosest']:.2f}")
        print("hardest parts: " + "; ".join(f"{p['stem']} {p['levels']:.1f} levels, located up to "
                                           f"{p['loosest_located_threshold']:g}" for p in r["hardest"]))
        for bound, b in r["faint_parts_left_out"].items():
            print(f"leaving out parts under {bound} levels ({b['defective_parts']} defective left): false alarms at "
                  f"90% / 95% located {b['false_alarms_at_90']} / {b['false_alarms_at_95']}")
    if "visible" in result:
        print(visible_table(result))
    name = args.name or f"{Path(folder).parent.name}_{Path(folder).name}"
    result["title"] = args.title or (name if args.prepared else
                                     "synthetic default set (as generated), working-scale U-Net, seed 0")
    out = args.out / f"visibility_{name}_{args.split}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
