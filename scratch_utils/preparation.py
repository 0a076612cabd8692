"""Preparation: checked parts -> masks, resized pairs, a stratified split and the output
contract every later step reads (notebook 01, ``python -m scratch_utils prepare``).

Output contract (``DIR``): ``images/<stem>.png`` (RGB), ``masks/<stem>.png`` (L, 0/255), both at
the working geometry (:mod:`scratch_utils.geometry`: a scale of the photo's own resolution by
default, chosen so the narrowest defect stays a pixel wide; the 128-px square on request),
``coco.json`` (defect polygons at source resolution), ``manifest.csv`` and ``preparation.json`` (settings, counts, skipped files); read them back with
:class:`scratch_utils.dataset.Prepared`.

Nothing under SOURCE is ever written, moved or deleted; outputs are written atomically;
a re-run only prepares what is new or changed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from . import QUALITY_DEFECTIVE
from .errors import ItemError, OutputError, PrepareError, output_error
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, is_within
from .geometry import Geometry, pick_scale
from .limits import DEFAULT_MAX_MEGAPIXELS
from .masks import MIN_COVERAGE, defect_measures, prepared_mask, rle_json
from .parallel import parallel_map
from .photos import model_input_image, open_photo, png_bytes
from .sources import FORMATS, Item, discover, scan_source

MANIFEST = "manifest.csv"
SUMMARY = "preparation.json"          # the settings and counts of the last `prepare`
INCOMPLETE = ".prepare_incomplete"    # there while a `prepare` runs, or after one that stopped
MANIFEST_FIELDS = ["stem", "source_image", "label_file", "quality", "width", "height",
                   "defect_share", "n_defects", "split"]
STATE_FILE = ".prepare_state.json"
# `--scale auto` keeps the narrowest defects this wide, "narrowest" read as the width below which
# lies NARROW_SHARE of the defects' total length: a stray 1-px speck weighs one pixel of length,
# a scratch its whole length, so no speck decides the scale.
MIN_DEFECT_WIDTH_PX = 1.0
NARROW_SHARE = 0.05
WIDTH_STATISTIC = "width below which lies 5% of the defects' total length (skeleton pixels)"
# Bump when the preparation code changes what it writes: outputs are then re-made.
PREPARE_VERSION = 3


@dataclass(frozen=True)
class Settings:
    geometry: Geometry = Geometry(scale=0.5)
    min_coverage: float = MIN_COVERAGE
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS   # not in key(): it only skips photos

    def key(self) -> str:
        return json.dumps({**self.geometry.as_dict(), "min_coverage": self.min_coverage,
                           "version": PREPARE_VERSION}, sort_keys=True)


def prepare_item(item: Item, settings: Settings, out: str) -> dict:
    """Prepare one photo: write ``images/<stem>.png`` and ``masks/<stem>.png``.

    Returns ``{"row": manifest row, "annotations": COCO annotations, "warnings": [...]}``
    or ``{"error": reason}``. Never raises for a bad item.
    """
    try:
        photo, (width, height) = open_photo(item.image, settings.geometry, item.declared_size,
                                            max_megapixels=settings.max_megapixels)
        if item.declared_size and tuple(item.declared_size) != (width, height):
            raise ItemError(f"label says {item.declared_size[0]}x{item.declared_size[1]} "
                            f"but the image is {width}x{height}")
        layout = settings.geometry.layout(width, height)
        small, union_area = prepared_mask(item, (width, height), layout, settings.min_coverage)
        quality = item.quality or ("defective" if union_area > 0 else "good")

        image_out = model_input_image(photo, layout)
        mask_out = np.zeros((layout.canvas_h, layout.canvas_w), dtype=np.uint8)
        x0, y0 = layout.x0, layout.y0
        mask_out[y0:y0 + layout.box_h, x0:x0 + layout.box_w] = small * np.uint8(255)
        out_dir = Path(out)
        atomic_write_bytes(out_dir / "images" / f"{item.stem}.png", png_bytes(image_out))
        atomic_write_bytes(out_dir / "masks" / f"{item.stem}.png",
                           png_bytes(Image.fromarray(mask_out, mode="L")))
    except ItemError as exc:
        return {"error": str(exc)}
    except OutputError:        # the disk, not the photo: stop the run, skip nothing
        raise
    except Exception as exc:  # noqa: BLE001 - one strange file must not stop the run
        return {"error": f"unexpected {type(exc).__name__}: {exc}"}

    annotations = []
    for polys in item.polygons:
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        annotations.append({"segmentation": polys, "area": float(mask_utils.area(rle)),
                            "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                            "iscrowd": 0, "category_id": 1,
                            "attributes": {"quality": QUALITY_DEFECTIVE}})
    for rle in item.rles:
        annotations.append({"segmentation": rle_json(rle), "area": float(mask_utils.area(rle)),
                            "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                            "iscrowd": 0, "category_id": 1,
                            "attributes": {"quality": QUALITY_DEFECTIVE}})
    row = {"stem": item.stem, "source_image": item.source_image, "label_file": item.label_file,
           "quality": quality, "width": width, "height": height,
           "defect_share": round(union_area / (width * height), 6),
           "n_defects": len(annotations), "split": ""}
    return {"row": row, "annotations": annotations, "warnings": item.warnings}


_FAILED_WRITE: list = []   # in a worker process, the write that failed: its later tasks fail at once


def _prepare_task(task):
    """:func:`prepare_item` in a worker: once a write has failed there, the photos still queued
    fail without being decoded (the pool runs what was queued before the error reaches prepare)."""
    import multiprocessing
    if _FAILED_WRITE:
        raise _FAILED_WRITE[0]
    try:
        return prepare_item(*task)
    except OutputError as exc:
        if multiprocessing.parent_process() is not None:
            _FAILED_WRITE.append(exc)
        raise


# Folder names that fix a photo's split (AIHub ships Training/ and Validation/ folders).
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def folder_split(row: dict) -> str | None:
    """The split a photo's folder names (``train/``, ``Validation/``, ``test/`` ... anywhere in
    its path under SOURCE), or None."""
    for part in Path(row.get("source_image", "")).parts[:-1]:
        if part.lower() in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[part.lower()]
    return None


def assign_splits(rows: list[dict], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Write each row's ``split``; returns how: ``"folders"`` or ``"hash"``.

    When SOURCE keeps its photos in split folders (:data:`SPLIT_FOLDERS`), those decide, and a
    split no folder names is carved from the training folders' photos by the rule below. Else
    the split is deterministic and stratified by quality: each stratum is ordered by a hash of
    (seed, stem), so a photo keeps its split when others are added; with 3 or more photos in a
    stratum, val and test get at least one.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative shares summing to 1, "
                         f"got {fractions}")
    named = [folder_split(row) for row in rows]
    if not any(named):
        _hash_split(rows, fractions, seed)
        return "hash"
    if not all(named):
        stray = next(row for row, split in zip(rows, named) if not split)
        raise PrepareError(f"{stray['source_image']} is in no split folder while other photos are "
                           f"(train/, val/, test/): put every photo in one, or none")
    for row, split in zip(rows, named):
        row["split"] = split
    missing = [k for k, name in enumerate(("train", "val", "test")) if name not in named and fractions[k] > 0]
    if missing:   # carve the splits no folder names out of the training folders
        share = [fractions[0]] + [fractions[k] if k in missing else 0.0 for k in (1, 2)]
        training = [row for row in rows if row["split"] == "train"]
        _hash_split(training, tuple(v / sum(share) for v in share), seed)
    return "folders"


def _hash_split(rows: list[dict], fractions, seed: int) -> None:
    strata = defaultdict(list)
    for row in rows:
        strata[row["quality"]].append(row)
    for members in strata.values():
        members.sort(key=lambda r: hashlib.sha1(f"{seed}:{r['stem']}".encode()).hexdigest())
        n = len(members)
        n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        for k, row in enumerate(members):
            row["split"] = "test" if k < n_test else "val" if k < n_test + n_val else "train"


def _signature(item: Item, settings: Settings) -> str:
    parts = [settings.key(), item.stem, item.source_image, item.label_file,
             json.dumps(item.polygons), json.dumps([rle_json(r) for r in item.rles
                                                    if not isinstance(r, list)], sort_keys=True)]
    for path in (item.image, item.label_path, item.mask):
        if path:
            stat = os.stat(path)
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _checked_source(source, out, fmt: str, geometry_args: dict) -> tuple[Path, Path]:
    """SOURCE and OUT as paths, or PrepareError: one clear message before any work."""
    if fmt not in FORMATS:
        raise PrepareError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    try:
        Geometry(**geometry_args)
    except (TypeError, ValueError) as exc:
        raise PrepareError(str(exc)) from None
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.exists():
        raise PrepareError(f"SOURCE {source} does not exist")
    if not source.is_dir():
        raise PrepareError(f"SOURCE {source} is not a folder")
    if not os.access(source, os.R_OK | os.X_OK):
        raise PrepareError(f"SOURCE {source} is not readable")
    source = source.resolve()
    if is_within(out, source):
        raise PrepareError(f"the output folder {out} is inside SOURCE {source}; choose a folder "
                           f"outside it (SOURCE is never written to)")
    return source, out


def _plan(items: list[Item], settings: Settings, out: Path) -> tuple[dict, dict, list]:
    """(previous state, up-to-date state, items to prepare with their signatures)."""
    state_path = out / STATE_FILE
    try:
        state = json.loads(state_path.read_text("utf-8")) if state_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        state = {}
    kept, todo = {}, []
    for item in items:
        signature = _signature(item, settings)
        previous = state.get(item.stem)
        if (previous and previous.get("signature") == signature
                and (out / "images" / f"{item.stem}.png").exists()
                and (out / "masks" / f"{item.stem}.png").exists()):
            kept[item.stem] = previous
        else:
            todo.append((item, signature))
    return state, kept, todo


def _run(todo: list, settings: Settings, out: Path, workers: int, progress: bool,
         new_state: dict, skipped: list) -> None:
    """Prepare the items of ``todo`` on ``workers`` processes into ``new_state``; failures
    go to ``skipped`` with their reason."""
    tasks = [(item, settings, str(out)) for item, _ in todo]
    results = parallel_map(_prepare_task, tasks, workers, desc="preparing", unit="img",
                           progress=progress and len(tasks) >= 50, min_tasks=32, chunksize=16)
    for (item, signature), result in zip(todo, results):
        if "error" in result:
            skipped.append({"file": item.source_image, "reason": result["error"]})
            continue
        new_state[item.stem] = {"signature": signature, "row": result["row"],
                                "annotations": result["annotations"], "warnings": result["warnings"]}


def _counts(scan, items: list, todo: list, state: dict, rows: list[dict], skipped: list) -> dict:
    qualities, splits = Counter(r["quality"] for r in rows), Counter(r["split"] for r in rows)
    return {"images_found": len(scan.images), "labels_found": len(scan.jsons),
            "prepared": sum(1 for item, _ in todo if item.stem in state),
            "up_to_date": len(items) - len(todo), "total": len(rows), "skipped": len(skipped),
            "good": qualities.get("good", 0), "defective": qualities.get("defective", 0),
            **{name: splits.get(name, 0) for name in ("train", "val", "test")}}


def prepare(source: str | os.PathLike, out: str | os.PathLike, fmt: str = "auto",
            scale: float | str | None = "auto", max_side: int | None = None, size: int | None = None,
            fit: str = "stretch", extent: int | None = None, split=(0.8, 0.1, 0.1), seed: int = 0,
            workers: int | None = None, progress: bool = True, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> dict:
    """Prepare SOURCE into OUT (see the module docstring); returns the summary, also written
    to ``preparation.json``.

    Geometry: by default (``scale="auto"``) photos keep their aspect ratio and are scaled so
    the narrowest defects stay about a pixel wide (:func:`estimate_scale`); ``scale=0.5``
    fixes the fraction, ``max_side`` caps the longer side; ``size=128`` squashes every photo
    into the 128-px square (``fit`` stretch or pad), the baseline; ``extent=128`` scales each
    photo to a 128-px square's pixels, aspect kept (:class:`Geometry`).

    Raises PrepareError when SOURCE cannot be used at all; bad individual files (and photos
    over ``max_megapixels``, checked from their headers) are skipped and listed in the summary
    with the reason.
    """
    started = time.perf_counter()
    source, out = _checked_source(source, out, fmt, dict(
        scale=None if scale == "auto" else scale, max_side=max_side, size=size, fit=fit, extent=extent))
    scan = scan_source(source)
    if not scan.images and not scan.jsons:
        raise PrepareError(f"SOURCE {source} contains no images or labels")
    detected, scan, items, skipped = discover(source, fmt, scan)
    geometry, estimate = _geometry(items, scale, max_side, size, fit, extent)
    settings = Settings(geometry=geometry, max_megapixels=max_megapixels)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, out) from None
    _, new_state, todo = _plan(items, settings, out)
    workers = max(1, workers or os.cpu_count() or 1)
    _run_marked(todo, settings, out, workers, progress, new_state, skipped)
    rows = [dict(new_state[item.stem]["row"]) for item in items if item.stem in new_state]
    if not rows:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped).most_common(3)
        raise PrepareError(f"nothing in {source} could be prepared ({len(skipped)} files skipped; "
                           f"most common: {'; '.join(r for r, _ in reasons) or 'none found'})")
    split_rule = assign_splits(rows, split, seed)
    _write_outputs(out, rows, new_state, source)
    atomic_write_json(out / STATE_FILE, new_state, indent=None)
    seconds = time.perf_counter() - started
    summary = {
        "source": str(source), "out": str(out.resolve()), "format": detected,
        "settings": geometry.as_dict() | {"min_coverage": settings.min_coverage,
                                          "split": list(split) if split_rule == "hash" else "folders",
                                          "seed": seed,
                                          "max_megapixels": max_megapixels,
                                          "scale_estimate": estimate},
        "counts": _counts(scan, items, todo, new_state, rows, skipped),
        "skipped": skipped,
        "warnings": [w for item in items if item.stem in new_state
                     for w in new_state[item.stem].get("warnings", [])],
        "seconds": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 1) if todo else None,
        "workers": workers,
    }
    atomic_write_json(out / SUMMARY, summary)
    (out / INCOMPLETE).unlink(missing_ok=True)
    return summary


def _geometry(items: list[Item], scale, max_side, size, fit, extent=None) -> tuple[Geometry, dict | None]:
    """The working geometry asked for, and the automatic scale's estimate when it chose it."""
    if extent:
        return Geometry(extent=int(extent), max_side=max_side), None
    estimate = None
    if size is None and scale == "auto":
        estimate = estimate_scale(items)
        scale = estimate["scale"]
    return Geometry(scale=None if size else float(scale), max_side=None if size else max_side,
                    size=int(size) if size else None, fit=fit), estimate


def _run_marked(todo: list, settings: Settings, out: Path, workers: int, progress: bool,
                new_state: dict, skipped: list) -> None:
    """:func:`_run`, with the folder marked incomplete until the manifest is written: a run
    stopped by a full disk or a kill is never read as a finished set (the next run finishes
    the job). A full disk says what the photos left would need."""
    atomic_write_text(out / INCOMPLETE, "prepare started, not finished\n")
    try:
        _run(todo, settings, out, workers, progress, new_state, skipped)
    except OutputError as exc:
        raise exc.needing(_bytes_left(out, new_state, todo)) if exc.free is not None else exc from None


def _bytes_left(out: Path, state: dict, todo: list) -> int:
    """What the photos not yet prepared will take, at the average size of those written."""
    sizes = [path.stat().st_size for folder in ("images", "masks") if (out / folder).is_dir()
             for path in (out / folder).glob("*.png")]
    left = sum(1 for item, _ in todo if item.stem not in state)
    per_photo = 2 * float(np.mean(sizes)) if sizes else 0.0
    return int(per_photo * max(left, 1))


def length_weighted_percentile(widths, lengths, share: float) -> float:
    """The width below which lies ``share`` of the total length of the defects."""
    widths, lengths = np.asarray(widths, float), np.asarray(lengths, float)
    order = np.argsort(widths, kind="stable")
    reached = np.cumsum(lengths[order]) >= share * lengths.sum()
    return float(widths[order][np.argmax(reached)])


def estimate_scale(items: list[Item], min_width_px: float = MIN_DEFECT_WIDTH_PX,
                   sample: int = 400) -> dict:
    """The working scale for ``prepare --scale auto``: the smallest of 1, 1/2, 1/4, 1/8 at
    which the narrowest defects stay ``min_width_px`` wide, "narrowest" read by
    :data:`WIDTH_STATISTIC` over about ``sample`` defects (taken from parts in an order that
    does not follow their names, so no one class fills the sample). Squashing further erases them."""
    measures = []
    for item in sorted(items, key=lambda it: hashlib.sha1(it.stem.encode()).hexdigest()):
        try:
            measures += [m for m in defect_measures(item) if m[0] > 0]
        except (OSError, ValueError, ItemError):   # an unreadable mask: prepare reports it
            continue
        if len(measures) >= sample:
            break
    widths, lengths = [m[0] for m in measures], [m[1] for m in measures]
    narrowest = length_weighted_percentile(widths, lengths, NARROW_SHARE) if measures else None
    return {"scale": pick_scale(narrowest, min_width_px), "min_width_px": min_width_px,
            "statistic": WIDTH_STATISTIC, "narrowest_defect_px": round(narrowest, 2) if narrowest else None,
            "median_defect_px": round(length_weighted_percentile(widths, lengths, 0.5), 2) if measures else None,
            "defects_measured": len(measures),
            "specks_measured": sum(1 for length in lengths if length <= 2)}


def _write_outputs(out: Path, rows: list[dict], state: dict, source: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / MANIFEST, text.getvalue())

    images, annotations = [], []
    for image_id, row in enumerate(rows, start=1):
        images.append({"id": image_id, "file_name": row["source_image"], "stem": row["stem"],
                       "width": row["width"], "height": row["height"],
                       "quality": row["quality"], "split": row["split"]})
        for ann in state[row["stem"]]["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id})
    coco = {"info": {"description": "defect polygons at source resolution",
                     "source": str(source)},
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "scratch", "supercategory": "defect"}]}
    atomic_write_json(out / "coco.json", coco, indent=None)
