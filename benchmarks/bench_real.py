"""Real photos: the working-scale U-Net and the 128-px squash side by side on any folder of
labelled photos (paired folders, COCO or AIHub), with the default profile's recipe.

Each path is prepared from the folder as a user would (``prepare SOURCE --out DIR`` at the
automatic scale, and ``--size 128``), trained by ``train`` with the profile's recipe (one run per
seed), and scored on the benchmark's own test split at its validation-chosen decision; the
false alarms at 95% caught are read from each split's detection curve. ``--masks binarised``
adds the same photos with their masks binarised at > 0 (a 1-px fringe and specks, as many
export tools write them), prepared from a copy under ``data/real/``: the folder itself is only
read. Runs are kept and reused, so the script can be stopped and started again.

    python benchmarks/bench_real.py FOLDER [--masks published binarised] [--seeds 0 1] [--fixed-scales 0.25]
                                           [--zooms 0.3] [--split-seeds 0 1 2]

``--fixed-scales`` adds the working-scale path prepared at each given scale (``prepare --scale``),
to check that the automatic scale is the best of them or within a seed's noise of it. ``--zooms``
adds the working-scale path trained with tiles zoomed at random, each axis apart (``train --zoom``):
the squash's stretch as an augmentation, with the photo kept at its own aspect. ``--paths`` also
takes ``"128-px letterbox"`` (the square with the aspect kept and padded) and ``"128-px extent"``
(each photo scaled to a 128-px square's pixels, aspect kept, then tiled: ``prepare --extent``).
``--split-seeds`` prepares the folder again with other train/val/test splits (``prepare --seed``), to tell a
difference between paths from a difference between splits; the main table is split 0's.

Writes ``benchmarks/results/real_<folder name>.json`` and prints the table of ``docs/recipe.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scratch_utils.files import atomic_write_json, list_images  # noqa: E402
from scratch_utils.preparation import prepare  # noqa: E402
from scratch_utils.profiles import data_root, get_profile  # noqa: E402
from scratch_utils.decision import choose_operating_point, learning_warnings  # noqa: E402
from scratch_utils.evaluation import run_predictions, scores  # noqa: E402
from scratch_utils.runs import load_run_config  # noqa: E402
from scratch_utils.train import train_or_reuse  # noqa: E402
from bench_determinism import cpu_model  # noqa: E402

HERE = Path(__file__).resolve().parent
PATHS = ("working scale", "128-px squash", "128-px letterbox", "128-px extent")
# The letterbox (aspect kept, padded) separates the squash's distortion from its size; the extent
# (each photo scaled to the squash's pixels, aspect kept, then tiled) its normalisation per photo.
DEFAULT_PATHS = PATHS[:2]
MASK_VERSIONS = ("published", "binarised")
SCORED = ("dice", "dice_defective_parts", "detection_rate", "located_detection_rate", "false_alarm_rate",
          "auroc", "false_alarms_at_95", "false_alarms_at_95_any")


def binarised_copy(source: Path, out: Path) -> Path:
    """A paired-folder copy of ``source`` whose masks are binarised at > 0 (made once)."""
    masks = source / "masks"
    if not (source / "images").is_dir() or not masks.is_dir():
        raise SystemExit(f"--masks binarised needs a paired folder (images/ + masks/): {source} is not one")
    if not (out / "done").is_file():
        shutil.copytree(source / "images", out / "images", dirs_exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        for path in list_images(masks):
            with Image.open(path) as handle:
                values = np.asarray(handle.convert("L"))
            Image.fromarray(np.where(values > 0, 255, 0).astype(np.uint8)).save(out / "masks" / f"{path.stem}.png")
        (out / "done").write_text("masks binarised at > 0\n")
    return out


def fixed_path(scale: float) -> str:
    return f"fixed scale {scale:g}"


def extent_path(extent: int) -> str:
    return f"{extent}-px extent"


def extent_of(path: str) -> int:
    """The extent a path's photos are prepared to (0 for every path but an extent's)."""
    return int(path.split("-", 1)[0]) if path.endswith("-px extent") else 0


def zoom_path(zoom: float) -> str:
    return f"{PATHS[0]}, zoom {zoom:g}"


def zoom_of(path: str) -> float:
    """The random zoom a path trains with (0 for every path but ``zoom_path``'s)."""
    return float(path.rsplit(" ", 1)[-1]) if path.startswith(f"{PATHS[0]}, zoom ") else 0.0


def prepared_paths(source: Path, root: Path, square: int, fixed_scales=(), paths=DEFAULT_PATHS, zooms=(),
                   split_seed: int = 0, extents=()) -> dict:
    """Path name -> (prepared folder, its preparation summary), made if missing or out of date
    (a zoomed path trains on the working scale's folder)."""
    plans = [(PATHS[0], "prepared-auto", {"scale": "auto"}), (PATHS[1], f"prepared-square{square}", {"size": square}),
             (PATHS[2], f"prepared-letterbox{square}", {"size": square, "fit": "pad"}),
             (PATHS[3], f"prepared-extent{square}", {"extent": square})]
    plans = [plan for plan in plans if plan[0] in paths or (plan[0] == PATHS[0] and zooms)]
    plans += [(fixed_path(scale), f"prepared-scale{scale:g}", {"scale": scale}) for scale in fixed_scales]
    plans += [(extent_path(extent), f"prepared-extent{extent}", {"extent": extent}) for extent in extents
              if extent_path(extent) not in paths]
    folders = {path: (root / name, prepare(source, root / name, progress=False, seed=split_seed, **options))
               for path, name, options in plans}
    return {**folders, **{zoom_path(zoom): folders[PATHS[0]] for zoom in zooms}}


def run_name(path: str, seed: int) -> str:
    if path == PATHS[0]:
        return f"scaled-s{seed}"
    if path == PATHS[1]:
        return f"square-s{seed}"
    if path == PATHS[2]:
        return f"letterbox-s{seed}"
    if path == PATHS[3]:
        return f"extent-s{seed}"
    if zoom_of(path):
        return f"scaled-zoom{zoom_of(path):g}-s{seed}"
    if extent_of(path):
        return f"extent{extent_of(path)}-s{seed}"
    return f"scale{path.split()[-1]}-s{seed}"


def run_row(masks: str, path: str, folder: Path, summary: dict, seed: int, runs: Path, profile,
            split_seed: int = 0) -> dict:
    config = profile.train_config("unet", seed=seed, zoom=zoom_of(path))
    started = time.perf_counter()
    run = train_or_reuse(folder, runs / run_name(path, seed), config, verbose=0)
    extra = load_run_config(run)["extra"]
    # Scored again from the kept predictions with this version's decision code (the same run).
    val, test = run_predictions(run, "val"), run_predictions(run, "test")
    point = choose_operating_point(val, rule=config.decision)
    metrics = {"val": scores(val, point), "test": scores(test, point), "operating_point": point.as_dict(),
               "warnings": learning_warnings(val, point)}
    settings = summary["settings"]
    row = {"masks": masks, "path": path, "seed": seed, "split_seed": split_seed, "run": str(run),
           "geometry": geometry(settings),
           "scale_estimate": settings.get("scale_estimate"), "train_seconds": extra["train_seconds"],
           "seconds": round(time.perf_counter() - started, 1), "warnings": metrics.get("warnings", []),
           "operating_point": metrics["operating_point"]}
    for split in ("val", "test"):
        row[split] = {**{key: metrics[split][key] for key in SCORED},
                      "defective_parts": metrics[split]["defective_parts"], "good_parts": metrics[split]["good_parts"]}
    test = row["test"]
    print(f"{masks:10s} {path:16s} seed {seed}, split {split_seed} ({row['geometry']}): test Dice {test['dice']:.3f}, caught "
          f"{test['detection_rate']:.0%} / false alarms {test['false_alarm_rate']:.0%}, false alarms at 95% "
          f"caught {test['false_alarms_at_95']:.0%} ({row['train_seconds']:.0f} s training)", flush=True)
    return row


def geometry(settings: dict) -> str:
    if settings.get("extent"):
        return f"each photo to {settings['extent']} px square's pixels, aspect kept"
    if not settings.get("size"):
        return f"scale {settings['scale']:g}"
    return f"{settings['size']} px square" + (", aspect kept (padded)" if settings.get("fit") == "pad" else "")


def path_order(path: str):
    if path in PATHS:
        return PATHS.index(path), 0.0
    if extent_of(path):
        return len(PATHS) - 1, float(extent_of(path))
    return (len(PATHS) + 1, zoom_of(path)) if zoom_of(path) else (len(PATHS), float(path.split()[-1]))


def cell(values, percent=False) -> str:
    """A score's mean over seeds, with its range when the seeds differ at the digits shown."""
    fmt = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:.3f}")
    low, high, mean = min(values), max(values), float(np.mean(values))
    return fmt(mean) + ("" if fmt(low) == fmt(high) else f" ({fmt(low)}-{fmt(high)})")


def markdown_table(result: dict) -> str:
    """One row per mask version and path: each score's mean over seeds, with its range."""
    lines = ["| masks | path | prepared at | seeds | val Dice | test Dice | test Dice per defective part | "
             "test: caught where the defect is / false alarms (val-chosen decision) | "
             "false alarms at 95% caught, any call (val / test) | false alarms at 95% caught where the defect is (val / test) | "
             "s per run |", "|" + "---|" * 11]
    first = [r for r in result["runs"] if r.get("split_seed", 0) == 0]
    paths = sorted({r["path"] for r in first}, key=path_order)
    for masks in MASK_VERSIONS:
        for path in paths:
            mine = [r for r in first if r["masks"] == masks and r["path"] == path]
            if not mine:
                continue
            test = [r["test"] for r in mine]
            lines.append(
                f"| {masks} | {path} | {mine[0]['geometry']} | {len(mine)} | {cell([r['val']['dice'] for r in mine])} | "
                f"{cell([t['dice'] for t in test])} | "
                f"{cell([t['dice_defective_parts'] for t in test])} | "
                f"{cell([t['located_detection_rate'] for t in test], True)} / {cell([t['false_alarm_rate'] for t in test], True)} | "
                f"{cell([r['val']['false_alarms_at_95_any'] for r in mine], True)} / "
                f"{cell([t['false_alarms_at_95_any'] for t in test], True)} | "
                f"{cell([r['val']['false_alarms_at_95'] for r in mine], True)} / "
                f"{cell([t['false_alarms_at_95'] for t in test], True)} | {np.mean([r['seconds'] for r in mine]):.0f} |")
    return "\n".join(lines)


def split_table(result: dict) -> str:
    """Pooled Dice per split (training seed 0), validation / test, for every path measured on more
    than one split: how far a split moves a path, beside how far the paths are apart."""
    runs = [r for r in result["runs"] if r["seed"] == 0]
    splits = sorted({r.get("split_seed", 0) for r in runs})
    lines = ["| masks | path | " + " | ".join(f"split {k}: val / test Dice" for k in splits) + " |",
             "|" + "---|" * (2 + len(splits))]
    for masks in MASK_VERSIONS:
        for path in sorted({r["path"] for r in runs if r["masks"] == masks}, key=path_order):
            mine = {r.get("split_seed", 0): r for r in runs if r["masks"] == masks and r["path"] == path}
            if len(mine) < 2:
                continue
            cells = [f"{mine[k]['val']['dice']:.3f} / {mine[k]['test']['dice']:.3f}" if k in mine else "-" for k in splits]
            lines.append(f"| {masks} | {path} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="photos with labels: paired folders, COCO or AIHub")
    parser.add_argument("--masks", nargs="*", default=["published"], choices=MASK_VERSIONS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--paths", nargs="*", default=list(DEFAULT_PATHS), choices=PATHS)
    parser.add_argument("--fixed-scales", nargs="*", type=float, default=[],
                        help="also the working-scale path prepared at these scales")
    parser.add_argument("--zooms", nargs="*", type=float, default=[],
                        help="also the working-scale path trained with tiles zoomed at random by up to this share")
    parser.add_argument("--extents", nargs="*", type=int, default=[],
                        help="also each photo scaled to this many pixels' square, aspect kept (prepare --extent)")
    parser.add_argument("--split-seeds", nargs="*", type=int, default=[0],
                        help="train/val/test splits to prepare (prepare --seed): split 0 is the main table's")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--suffix", default="",
                        help="write real_<folder>_<suffix>.json: a table of its own (one CPU's runs side by side)")
    args = parser.parse_args()
    source, profile = args.folder.expanduser().resolve(), get_profile("default")
    name = source.name
    rows = []
    for masks, split_seed in [(m, k) for m in args.masks for k in args.split_seeds]:
        root = data_root() / "real" / name / masks / ("" if split_seed == 0 else f"split{split_seed}")
        origin = source if masks == "published" else binarised_copy(source, data_root() / "real" / name / "binarised-source")
        folders = prepared_paths(origin, root, profile.square_size, args.fixed_scales, args.paths, args.zooms,
                                 split_seed, args.extents)
        extents = [extent_path(e) for e in args.extents if extent_path(e) not in args.paths]
        for seed in args.seeds:
            for path in (list(args.paths) + [fixed_path(scale) for scale in args.fixed_scales]
                         + [zoom_path(zoom) for zoom in args.zooms] + extents):
                rows.append(run_row(masks, path, *folders[path], seed, root / "runs", profile, split_seed))
    out = args.out / (f"real_{name}_{args.suffix}.json" if args.suffix else f"real_{name}.json")
    previous = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    def key(r):
        return r["masks"], r["path"], r["seed"], r.get("split_seed", 0)
    done = {key(r) for r in rows}
    earlier = {key(r): r for r in previous["runs"]}
    for row in rows:   # a reused run keeps the seconds it took when it was trained
        before = earlier.get(key(row))
        if before and row["seconds"] < row["train_seconds"] and before["train_seconds"] == row["train_seconds"]:
            row["seconds"] = before["seconds"]
    rows = [r for r in previous["runs"] if key(r) not in done] + rows
    rows.sort(key=lambda r: (r.get("split_seed", 0), MASK_VERSIONS.index(r["masks"]), path_order(r["path"]), r["seed"]))
    result = {"benchmark": "real photos", "folder": name, "profile": profile.name,
              "recipe": profile.train_config("unet").identity(), "scored_on": "the folder's own test split, photo resolution",
              "runs": rows, "cpu_count": os.cpu_count(), "machine": platform.machine(), "cpu": cpu_model()}
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(split_table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
