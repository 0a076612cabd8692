"""Reading label files: AIHub JSON, COCO entries, and what a label says (notebook 01).

Each reader checks what it reads and raises :class:`scratch_utils.errors.ItemError` naming the
problem; :mod:`scratch_utils.sources` turns that into one line of ``skipped`` and goes on.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from . import QUALITY_DEFECTIVE, QUALITY_GOOD
from .errors import ItemError
from .geometry import polygon_area
from .photos import read_mask_file

QUALITY_ALIASES = {
    QUALITY_GOOD: "good", "good": "good", "ok": "good", "normal": "good",
    QUALITY_DEFECTIVE: "defective", "defective": "defective", "defect": "defective",
    "ng": "defective", "bad": "defective",
}


def read_json_label(path: str | os.PathLike) -> dict:
    """Read a JSON label written with or without a UTF-8 BOM; ItemError when invalid."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ItemError(f"cannot read label: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ItemError(f"label is not UTF-8 text (byte {exc.start})") from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ItemError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(payload, dict):
        raise ItemError("invalid label: the top level is not a JSON object")
    return payload


def check_plain_file_name(name) -> str:
    """An AIHub ``file_name`` must be a bare file name: no folders, no ``..``, not absolute."""
    if not isinstance(name, str) or not name.strip():
        raise ItemError("images[0].file_name is missing or empty")
    if "/" in name or "\\" in name or name in {".", ".."} or os.path.isabs(name):
        raise ItemError(f"file_name {name!r} has a directory part; only a plain file name "
                        f"is accepted (nothing is read outside SOURCE)")
    return name


def parse_polygons(segmentation, width: int, height: int, where: str,
                   warnings: list) -> list[list[float]]:
    """Flat polygon(s) -> list of valid flat polygons clipped to the image.

    Accepts AIHub's single flat list ``[x1, y1, ...]`` and COCO's list of such lists.
    Polygons with fewer than 3 points or non-numeric values are dropped with a warning;
    points outside the image are clipped (with a warning).
    """
    if isinstance(segmentation, list) and segmentation and all(
            isinstance(v, (int, float)) for v in segmentation):
        candidates = [segmentation]
    elif isinstance(segmentation, list):
        candidates = segmentation
    else:
        warnings.append(f"{where}: segmentation is not a polygon list: dropped")
        return []
    polygons = []
    for k, poly in enumerate(candidates):
        tag = f"{where} polygon {k + 1}"
        if not isinstance(poly, list) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
            warnings.append(f"{tag}: coordinates are not numbers: dropped")
            continue
        if len(poly) < 6 or len(poly) % 2:
            warnings.append(f"{tag}: has {len(poly) // 2} point(s), a polygon needs at "
                            f"least 3: dropped")
            continue
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        clipped = np.clip(xy, [0, 0], [width, height])
        if not np.array_equal(clipped, xy):
            warnings.append(f"{tag}: extends outside the {width}x{height} image: clipped")
        if polygon_area(clipped) <= 0:
            warnings.append(f"{tag}: has no area inside the image: dropped")
            continue
        polygons.append([round(float(v), 2) for v in clipped.reshape(-1)])
    return polygons


def normalise_quality(value, where: str) -> str:
    quality = QUALITY_ALIASES.get(str(value).strip().lower() if value is not None else "")
    if quality is None:
        raise ItemError(f"{where}: quality {value!r} is neither 양품 (good) nor 불량품 (defective)")
    return quality


def aihub_defects(annotations, size: tuple[int, int], where: str, warnings: list
                  ) -> tuple[str, list]:
    """(quality, polygons per defect) of an AIHub label's annotations: the part is defective
    when any annotation says 불량품, and then it needs at least one usable defect polygon."""
    if not isinstance(annotations, list):
        raise ItemError("annotations is not a list")
    width, height = size
    qualities, polygons = [], []
    for k, ann in enumerate(annotations):
        ann_where = f"{where} annotation {k + 1}"
        if not isinstance(ann, dict):
            raise ItemError(f"annotation {k + 1} is not an object")
        quality = normalise_quality((ann.get("attributes") or {}).get("quality"), ann_where)
        qualities.append(quality)
        if quality == "defective":
            polys = parse_polygons(ann.get("segmentation"), width, height, ann_where, warnings)
            if polys:
                polygons.append(polys)
    quality = "defective" if "defective" in qualities else "good"
    if quality == "defective" and not polygons:
        raise ItemError("defective label has no usable defect polygon")
    return quality, polygons


def coco_defects(annotations: list, size: tuple[int, int], where: str, warnings: list):
    """(polygons, RLEs) of one image's defect annotations; ``quality: 양품`` ones are skipped."""
    width, height = size
    polygons, rles = [], []
    for k, ann in enumerate(annotations):
        ann_where = f"{where} annotation {ann.get('id', k + 1)}"
        quality = (ann.get("attributes") or {}).get("quality")
        if quality is not None and normalise_quality(quality, ann_where) == "good":
            continue
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, dict):
            rle = segmentation
            if isinstance(rle.get("counts"), list):
                rle = mask_utils.frPyObjects(rle, height, width)
            rles.append(rle)
        else:
            polys = parse_polygons(segmentation, width, height, ann_where, warnings)
            if polys:
                polygons.append(polys)
    return polygons, rles


def label_excerpt(item, max_chars: int = 900) -> str:
    """What the item's label says, as its format writes it, shortened for reading: the AIHub
    JSON, the COCO image entry with its annotations, or the mask file of a pair."""
    if item.mask:
        with Image.open(item.image) as photo:
            mask = read_mask_file(item.mask, photo.size)
        return (f"{item.source_image}: mask {item.label_file}, {mask.shape[1]}x{mask.shape[0]} px, "
                f"{int(mask.sum())} defect pixels")
    label = read_json_label(item.label_path)
    annotations = label.get("annotations", [])
    if len(label.get("images", [])) > 1 or any("image_id" in a for a in annotations):  # COCO
        image = next(i for i in label["images"] if Path(str(i.get("file_name", ""))).name
                     == Path(item.source_image).name)
        label = {"images": [image], "annotations": [a for a in label.get("annotations", [])
                                                     if a.get("image_id") == image.get("id")]}

    def shorten(annotation):
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list) and segmentation:
            first = segmentation[0] if isinstance(segmentation[0], list) else segmentation
            segmentation = [round(v, 1) for v in first[:6]] + ["..."]
        elif isinstance(segmentation, dict):
            segmentation = {"size": segmentation.get("size"), "counts": "..."}
        return {**annotation, "segmentation": segmentation}

    shown = {**label, "annotations": [shorten(a) for a in label.get("annotations", [])]}
    text = json.dumps(shown, ensure_ascii=False, indent=1)
    if len(text) <= max_chars:
        return text
    lines, kept = text.splitlines(), []
    for line in lines:            # whole lines only: never cut a key or a value in half
        if sum(len(k) + 1 for k in kept) + len(line) > max_chars:
            break
        kept.append(line)
    return "\n".join(kept) + f"\n... ({len(lines) - len(kept)} more lines)"
