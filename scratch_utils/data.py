"""Data preparation: labelled photos -> COCO -> binary masks -> resized pairs with splits.

Introduced in notebook 01. Three source formats share one code path:

- ``aihub``: one JSON label per photo (AIHub "car part quality inspection": UTF-8 with or
  without BOM, ``images[0].file_name``, ``annotations[].segmentation`` as a flat polygon,
  ``attributes.quality`` 양품/불량품); photos found by file name anywhere under SOURCE.
- ``coco``: one or more COCO instance files (a Roboflow export: ``_annotations.coco.json``
  beside its images); every annotation is a defect unless it says ``quality: 양품``.
- ``pairs``: ``images/`` + ``masks/`` with matching stems, or folders ``X`` + ``X_labels``
  (or ``X_masks``) paired by stem or by sorted name (the medical course layout).

Output contract (``DIR``): ``images/<stem>.png`` (RGB), ``masks/<stem>.png`` (L, 0/255), both at
the working geometry (:mod:`scratch_utils.geometry`: a scale of the photo's own resolution by
default, chosen so the narrowest defect stays a pixel wide; the 128-px square on request),
``coco.json`` (defect polygons at source resolution), ``manifest.csv`` and ``report.json``.

Nothing under SOURCE is ever written, moved or deleted; outputs are written atomically;
a re-run only prepares what is new or changed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

from . import QUALITY_DEFECTIVE, QUALITY_GOOD
from .errors import ItemError, PhotoTooLarge  # noqa: F401 - re-exported: data.ItemError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, is_within
from .geometry import FITS, Geometry, fit_box, pick_scale  # noqa: F401 - fit_box re-exported
from .limits import DEFAULT_MAX_MEGAPIXELS, check_pixel_budget

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
FORMATS = ("auto", "aihub", "coco", "pairs")
QUALITY_ALIASES = {
    QUALITY_GOOD: "good", "good": "good", "ok": "good", "normal": "good",
    QUALITY_DEFECTIVE: "defective", "defective": "defective", "defect": "defective",
    "ng": "defective", "bad": "defective",
}
MANIFEST_FIELDS = ["stem", "source_image", "label_file", "quality", "width", "height",
                   "defect_share", "n_defects", "split"]
STATE_FILE = ".prepare_state.json"
# A prepared mask pixel is "defect" when at least this share of it is covered at source
# resolution; a thin defect (its area is under half the pixels it touches, as for a
# scratch thinner than a prepared pixel) keeps every pixel it touches, so
# downscaling never erases a scratch or breaks it into dashes.
MIN_COVERAGE = 0.25
# `--scale auto` keeps the narrowest defects (5th percentile of their widths) this wide.
MIN_DEFECT_WIDTH_PX = 1.0
# Bump when the preparation code changes what it writes: outputs are then re-made.
PREPARE_VERSION = 2


class PrepareError(Exception):
    """SOURCE cannot be prepared at all (missing, unreadable, empty, nothing valid)."""


@dataclass
class Item:
    """One photo to prepare, with its labels already parsed and checked."""
    stem: str
    image: str                      # absolute path
    source_image: str               # path relative to SOURCE (for the manifest)
    label_file: str = ""            # relative to SOURCE; "" for mask pairs
    label_path: str = ""            # absolute, for the up-to-date check
    quality: str | None = None      # good | defective; None: from the mask (pairs)
    polygons: list = field(default_factory=list)   # per defect: list of flat polygons
    rles: list = field(default_factory=list)       # per defect: COCO RLE dicts
    mask: str = ""                  # absolute path of a mask image (pairs)
    declared_size: tuple | None = None             # (width, height) the label states
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    geometry: Geometry = Geometry(scale=0.5)
    min_coverage: float = MIN_COVERAGE
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS   # not in key(): it only skips photos

    def key(self) -> str:
        return json.dumps({**self.geometry.as_dict(), "min_coverage": self.min_coverage,
                           "version": PREPARE_VERSION}, sort_keys=True)


# --------------------------------------------------------------------------- helpers

def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
        x, y = clipped[:, 0], clipped[:, 1]
        if 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) <= 0:
            warnings.append(f"{tag}: has no area inside the image: dropped")
            continue
        polygons.append([round(float(v), 2) for v in clipped.reshape(-1)])
    return polygons


def normalise_quality(value, where: str) -> str:
    quality = QUALITY_ALIASES.get(str(value).strip().lower() if value is not None else "")
    if quality is None:
        raise ItemError(f"{where}: quality {value!r} is neither 양품 (good) nor 불량품 (defective)")
    return quality


# --------------------------------------------------------------------------- discovery

@dataclass
class Scan:
    images: list = field(default_factory=list)   # Path
    jsons: list = field(default_factory=list)    # Path
    skipped: list = field(default_factory=list)  # {"file", "reason"}


def scan_source(source: Path) -> Scan:
    """Every image and JSON file under SOURCE; hidden folders and links leaving SOURCE skipped."""
    scan = Scan()

    def on_error(exc: OSError):
        scan.skipped.append({"file": _rel(Path(exc.filename), source),
                             "reason": f"cannot read folder: {exc.strerror}"})

    for folder, dirs, files in os.walk(source, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            suffix = path.suffix.lower()
            if suffix not in IMAGE_EXTENSIONS and suffix != ".json":
                continue
            if path.is_symlink() and not is_within(path, source):
                scan.skipped.append({"file": _rel(path, source),
                                     "reason": "link points outside SOURCE: not followed"})
                continue
            (scan.jsons if suffix == ".json" else scan.images).append(path)
    return scan


def _pair_folders(source: Path) -> list[tuple[Path, Path]]:
    """Folders of photos and their masks: images/+masks/, or X/ + X_labels|X_masks|X_label."""
    pairs = []
    for folder in sorted([source, *[p for p in source.rglob("*") if p.is_dir()]]):
        if any(part.startswith(".") for part in folder.relative_to(source).parts):
            continue
        if (folder / "images").is_dir() and (folder / "masks").is_dir():
            pairs.append((folder / "images", folder / "masks"))
        for suffix in ("_labels", "_masks", "_label", "_mask"):
            if folder.name.endswith(suffix):
                partner = folder.with_name(folder.name[: -len(suffix)])
                if partner.is_dir():
                    pairs.append((partner, folder))
    return pairs


def detect_format(source: Path, scan: Scan) -> str:
    if _pair_folders(source) and not scan.jsons:
        return "pairs"
    for path in scan.jsons:
        try:
            payload = read_json_label(path)
        except ItemError:
            continue
        if "categories" in payload or len(payload.get("images") or []) > 1:
            return "coco"
        if payload.get("images") is not None:
            return "aihub"
    if _pair_folders(source):
        return "pairs"
    if scan.jsons:  # labels that do not parse: the AIHub path reports each one by name
        return "aihub"
    raise PrepareError(f"cannot tell the format of {source}: no AIHub labels, COCO file "
                       f"or images/+masks/ folders found (pass --format)")


def _image_index(images: list[Path]) -> dict[str, list[Path]]:
    index = defaultdict(list)
    for path in images:
        index[path.name].append(path)
        if path.name.lower() != path.name:  # labels written on Windows may differ in case
            index[path.name.lower()].append(path)
    return index


def _closest(candidates: list[Path], label: Path, source: Path) -> Path | None:
    """The candidate whose folder path best matches the label's (parallel label/data trees)."""
    label_parts = label.parent.relative_to(source).parts

    def shared_suffix(path: Path) -> int:
        parts = path.parent.relative_to(source).parts
        n = 0
        while n < min(len(parts), len(label_parts)) and parts[-1 - n] == label_parts[-1 - n]:
            n += 1
        return n

    scores = sorted(((shared_suffix(p), p) for p in candidates), reverse=True)
    if len(scores) > 1 and scores[0][0] == scores[1][0]:
        return None
    return scores[0][1]


def discover_aihub(source: Path, scan: Scan) -> tuple[list[Item], list[dict]]:
    skipped = list(scan.skipped)
    index = _image_index(scan.images)
    used: dict[Path, str] = {}
    mentioned: set[str] = set()  # names of rejected labels' photos: reported once, via the label
    items = []
    for label_path in scan.jsons:
        label_rel = _rel(label_path, source)
        try:
            payload = read_json_label(label_path)
            images = payload.get("images")
            if not isinstance(images, list) or not images or not isinstance(images[0], dict):
                raise ItemError("label has no images[0] entry")
            meta = images[0]
            name = check_plain_file_name(meta.get("file_name"))
            mentioned.add(name)
            try:
                width, height = int(meta["width"]), int(meta["height"])
            except (KeyError, TypeError, ValueError):
                raise ItemError("images[0] has no valid width/height") from None
            if width <= 0 or height <= 0:
                raise ItemError(f"images[0] size {width}x{height} is not positive")
            candidates = index.get(name) or index.get(name.lower()) or []
            if not candidates:
                raise ItemError(f"image {name!r} not found under SOURCE")
            image_path = candidates[0] if len(candidates) == 1 else _closest(
                candidates, label_path, source)
            if image_path is None:
                raise ItemError(f"image name {name!r} is ambiguous: "
                                + ", ".join(_rel(c, source) for c in candidates))
            if image_path in used:
                raise ItemError(f"duplicate: image {_rel(image_path, source)} is also "
                                f"labelled by {used[image_path]}")
            annotations = payload.get("annotations") or []
            if not isinstance(annotations, list):
                raise ItemError("annotations is not a list")
            warnings: list[str] = []
            qualities, polygons = [], []
            for k, ann in enumerate(annotations):
                where = f"{label_rel} annotation {k + 1}"
                if not isinstance(ann, dict):
                    raise ItemError(f"annotation {k + 1} is not an object")
                quality = normalise_quality((ann.get("attributes") or {}).get("quality"), where)
                qualities.append(quality)
                if quality == "defective":
                    polys = parse_polygons(ann.get("segmentation"), width, height, where, warnings)
                    if polys:
                        polygons.append(polys)
            quality = "defective" if "defective" in qualities else "good"
            if quality == "defective" and not polygons:
                raise ItemError("defective label has no usable defect polygon")
        except ItemError as exc:
            skipped.append({"file": label_rel, "reason": str(exc)})
            continue
        used[image_path] = label_rel
        items.append(Item(stem=image_path.stem, image=str(image_path),
                          source_image=_rel(image_path, source), label_file=label_rel,
                          label_path=str(label_path), quality=quality, polygons=polygons,
                          declared_size=(width, height), warnings=warnings))
    for path in scan.images:
        if path not in used and path.name not in mentioned:
            skipped.append({"file": _rel(path, source), "reason": "image has no label"})
    return items, skipped


def discover_coco(source: Path, scan: Scan) -> tuple[list[Item], list[dict]]:
    skipped = list(scan.skipped)
    items, used = [], set()
    mentioned: set[Path] = set()  # photos named by an entry, valid or not: reported once, via it
    coco_files = []
    for path in scan.jsons:
        try:
            payload = read_json_label(path)
        except ItemError as exc:
            skipped.append({"file": _rel(path, source), "reason": str(exc)})
            continue
        if not isinstance(payload.get("images"), list) or "annotations" not in payload:
            skipped.append({"file": _rel(path, source),
                            "reason": "not a COCO instance file (no images/annotations lists)"})
            continue
        coco_files.append((path, payload))
    if not coco_files:
        raise PrepareError(f"no COCO instance JSON found under {source}")
    for coco_path, payload in coco_files:
        coco_rel = _rel(coco_path, source)
        by_image = defaultdict(list)
        for ann in payload.get("annotations") or []:
            if isinstance(ann, dict):
                by_image[ann.get("image_id")].append(ann)
        for meta in payload["images"]:
            where = f"{coco_rel} image {meta.get('id') if isinstance(meta, dict) else '?'}"
            try:
                if not isinstance(meta, dict):
                    raise ItemError("image entry is not an object")
                name = meta.get("file_name")
                if not isinstance(name, str) or not name:
                    raise ItemError("file_name is missing")
                if os.path.isabs(name) or ".." in Path(name.replace("\\", "/")).parts:
                    raise ItemError(f"file_name {name!r} leaves SOURCE; only paths inside "
                                    f"SOURCE are accepted")
                image_path = coco_path.parent / name
                mentioned.add(image_path.resolve())
                if not image_path.is_file():
                    raise ItemError(f"image {name!r} not found next to {coco_rel}")
                if not is_within(image_path, source):
                    raise ItemError(f"image {name!r} resolves outside SOURCE")
                if image_path.resolve() in used:
                    raise ItemError(f"duplicate: image {name!r} is listed twice")
                width, height = int(meta["width"]), int(meta["height"])
                warnings: list[str] = []
                polygons, rles = [], []
                for k, ann in enumerate(by_image.get(meta.get("id"), [])):
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
            except ItemError as exc:
                skipped.append({"file": where, "reason": str(exc)})
                continue
            except (KeyError, TypeError, ValueError) as exc:
                skipped.append({"file": where, "reason": f"invalid image entry: {exc!r}"})
                continue
            used.add(image_path.resolve())
            items.append(Item(stem=image_path.stem, image=str(image_path),
                              source_image=_rel(image_path, source), label_file=coco_rel,
                              label_path=str(coco_path),
                              quality="defective" if polygons or rles else "good",
                              polygons=polygons, rles=rles, declared_size=(width, height),
                              warnings=warnings))
    for path in scan.images:
        if path.resolve() not in mentioned:
            skipped.append({"file": _rel(path, source), "reason": "image is not in any COCO file"})
    return items, skipped


def discover_pairs(source: Path, scan: Scan) -> tuple[list[Item], list[dict]]:
    skipped = list(scan.skipped)
    folders = _pair_folders(source)
    if not folders:
        raise PrepareError(f"no images/+masks/ (or X/+X_labels/) folders found under {source}")

    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith("."))

    items = []
    prefix_groups = len(folders) > 1
    for image_dir, mask_dir in folders:
        photos, masks = images_in(image_dir), images_in(mask_dir)
        by_stem = {p.stem: p for p in masks}
        if all(p.stem in by_stem for p in photos) or image_dir.name == "images":
            pairs = [(p, by_stem.get(p.stem)) for p in photos]
            paired = {m for _, m in pairs if m}
            for mask in masks:
                if mask not in paired:
                    skipped.append({"file": _rel(mask, source), "reason": "mask has no image"})
        elif len(photos) == len(masks):
            pairs = list(zip(photos, masks))  # the medical-course layout: sorted order
        else:
            raise PrepareError(f"cannot pair {_rel(image_dir, source)} ({len(photos)} images) "
                               f"with {_rel(mask_dir, source)} ({len(masks)} masks): "
                               f"stems differ and counts differ")
        group = image_dir.parent.name if image_dir.name == "images" else image_dir.name
        for photo, mask in pairs:
            if mask is None:
                skipped.append({"file": _rel(photo, source), "reason": "image has no mask"})
                continue
            stem = f"{group}_{photo.stem}" if prefix_groups else photo.stem
            items.append(Item(stem=stem, image=str(photo), source_image=_rel(photo, source),
                              label_file=_rel(mask, source), label_path=str(mask),
                              mask=str(mask)))
    return items, skipped


# --------------------------------------------------------------------------- one item

def to_rgb(image: Image.Image) -> Image.Image:
    """Any colour mode -> 8-bit RGB (16-bit and float greyscale are rescaled, not clipped)."""
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray((np.clip(values / top, 0, 1) * 255 + 0.5).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        flat = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(flat, image)
    return image.convert("RGB")


def open_photo(path, geometry: Geometry | None = None,
               declared_size: tuple[int, int] | None = None,
               exif: str = "label",
               max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> tuple[Image.Image, tuple]:
    """Open, check and decode a photo; returns (RGB image, full-resolution (w, h)).

    The header's size is checked against ``max_megapixels`` before anything is decoded
    (:class:`PhotoTooLarge`); reading EXIF from a PNG decodes it, so that comes after.

    With a ``geometry``, JPEGs are decoded at the smallest 1/2, 1/4 or 1/8 scale that still
    covers the model-input box (reduce-on-decode), which is most of preparation's speed.
    EXIF rotation: ``exif="label"`` (preparation) applies it when the label's stated size
    matches the rotated photo; ``"always"`` (predict, the app) shows the photo as people see it.
    """
    try:
        image = Image.open(path)
        check_pixel_budget(image.size, max_megapixels)
        full = image.size
        transpose = False
        orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
        if exif == "always" and orientation in (2, 3, 4, 5, 6, 7, 8):
            transpose, full = True, (full[::-1] if orientation in (5, 6, 7, 8) else full)
        elif declared_size and orientation in (5, 6, 7, 8) and tuple(declared_size) == full[::-1]:
            transpose, full = True, full[::-1]
        elif declared_size and orientation in (2, 3, 4) and tuple(declared_size) == full:
            transpose = True
        if geometry is not None and image.format == "JPEG":
            layout = geometry.layout(*full)
            box_w, box_h = layout.box_w, layout.box_h
            image.draft("RGB", (box_h, box_w) if full != image.size else (box_w, box_h))
        image.load()
        if transpose:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image), full
    except FileNotFoundError:
        raise ItemError("image file disappeared during preparation") from None
    except UnidentifiedImageError:
        raise ItemError("cannot read image: not an image file PIL recognises") from None
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires in Image.open for > 2 x MAX_IMAGE_PIXELS, before our check.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise PhotoTooLarge(None, None, max_megapixels,
                            int(declared.group(1)) if declared else 0) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"cannot read image (corrupt or truncated?): {exc}") from None


SUPERSAMPLE = 4        # polygons are rasterised on a 4x finer grid: 16 samples a pixel
THIN_SUPERSAMPLE = 16  # ... and thin ones on a 16x grid, which no 1-px line slips through


def polygon_coverage(polygons: list, width: int, height: int, box: tuple[int, int],
                     supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Share (0..1) of each prepared pixel that a defect's polygons cover.

    The polygons are scaled into the ``box``, and only their bounding box is rasterised
    by pycocotools on a grid ``supersample`` times finer, then averaged: the answer of
    rasterising at source resolution and area-downscaling, for a fraction of the work.
    """
    box_w, box_h = box
    sx, sy = box_w / width, box_h / height
    scaled = [np.asarray(poly, dtype=np.float64).reshape(-1, 2) * (sx, sy) for poly in polygons]
    corners = np.concatenate(scaled)
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, None)
    x1 = min(box_w, int(np.ceil(corners[:, 0].max())) + 1)
    y1 = min(box_h, int(np.ceil(corners[:, 1].max())) + 1)
    coverage = np.zeros((box_h, box_w), dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        return coverage
    crop = [((xy - (x0, y0)) * supersample).reshape(-1).tolist() for xy in scaled]
    rows, cols = (y1 - y0) * supersample, (x1 - x0) * supersample
    fine = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(crop, rows, cols)))
    coverage[y0:y1, x0:x1] = fine.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(
        axis=(1, 3), dtype=np.float32)
    return coverage


def raster_coverage(mask: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """Share (0..1) of each prepared pixel covered by a full-resolution 0/1 mask."""
    small = Image.fromarray(mask * np.uint8(255)).resize(box, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def source_rles(item: Item, width: int, height: int) -> list[dict]:
    """One COCO RLE per defect at source resolution (cheap: no pixels are decoded)."""
    return ([mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
             for polys in item.polygons] + list(item.rles))


def _read_mask_file(path: str, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as mask_image:
            if mask_image.size != size:   # from the header, before decoding
                raise ItemError(f"image is {size[0]}x{size[1]} but its mask "
                                f"{Path(path).name} is {mask_image.size[0]}x{mask_image.size[1]}")
            mask_image.load()
            values = np.asarray(to_rgb(mask_image).convert("L"))
    except ItemError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"cannot read mask {Path(path).name}: {exc}") from None
    # 0/1 masks and 0/255 masks both occur; JPEG masks carry noise around 0 and 255.
    return (values > (127 if values.max() > 1 else 0)).astype(np.uint8)


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _rle_json(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def model_input_image(photo: Image.Image, layout) -> Image.Image:
    """The photo resized into its layout's box on the canvas: what ``prepare`` writes and
    what ``predict`` and the app feed the model (one function, so they never disagree)."""
    box = (layout.box_w, layout.box_h)
    resized = photo if photo.size == box else photo.resize(box, Image.Resampling.LANCZOS,
                                                            reducing_gap=3.0)
    if (layout.canvas_w, layout.canvas_h) == box:
        return resized
    canvas = Image.new("RGB", (layout.canvas_w, layout.canvas_h))
    canvas.paste(resized, (layout.x0, layout.y0))
    return canvas


def prepared_mask(item: Item, size: tuple[int, int], layout, min_coverage: float = MIN_COVERAGE
                  ) -> tuple[np.ndarray, float]:
    """An item's defect mask in its layout's box (bool) and its defect area at source
    resolution, for any source format: polygons and RLEs via pycocotools, mask files read.

    A prepared pixel is defect when ``min_coverage`` of it is covered; a thin defect keeps
    every pixel it touches, so no scratch is dropped."""
    width, height = size
    box_w, box_h = layout.box_w, layout.box_h
    if item.mask:
        full_mask = _read_mask_file(item.mask, (width, height))
        item.rles = [mask_utils.encode(np.asfortranarray(full_mask))] if full_mask.any() else []
    rles = source_rles(item, width, height)
    coverages = [polygon_coverage(polys, width, height, (box_w, box_h)) for polys in item.polygons]
    coverages += [raster_coverage(mask_utils.decode(rle), (box_w, box_h)) for rle in item.rles]
    small = np.zeros((box_h, box_w), dtype=bool)
    for k, (rle, coverage) in enumerate(zip(rles, coverages)):
        kept = coverage >= min_coverage
        area_in_pixels = mask_utils.area(rle) * box_w * box_h / (width * height)
        if not kept.any() or area_in_pixels < 0.5 * np.count_nonzero(coverage):
            # A thin defect (most scratches): thresholding would break it into dashes.
            # Keep every pixel it touches, found on a grid fine enough not to miss one
            # (a raster mask's coverage is already exact).
            if k < len(item.polygons):
                coverage = polygon_coverage(item.polygons[k], width, height, (box_w, box_h),
                                            THIN_SUPERSAMPLE)
            kept = coverage > 0
        small |= kept
    union_area = float(mask_utils.area(mask_utils.merge(rles))) if rles else 0.0
    return small, union_area


def source_mask(item: Item) -> np.ndarray:
    """An item's defect mask at the photo's own resolution (bool), for any source format."""
    with Image.open(item.image) as handle:
        size = handle.size
    if item.mask:
        return _read_mask_file(item.mask, size).astype(bool)
    rles = source_rles(item, *size)
    if not rles:
        return np.zeros(size[::-1], dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def item_quality(item: Item) -> str:
    """good / defective: the label's word, or for mask folders whether the mask has a defect."""
    return item.quality or ("defective" if source_mask(item).any() else "good")


def narrowest_defect(item: Item) -> float:
    """Width in pixels of the item's narrowest defect at source resolution (0 for a good part)."""
    if item.polygons:
        return min(defect_width(polys) for polys in item.polygons)
    mask = source_mask(item)
    return mask_width(mask) if mask.any() else 0.0


def label_excerpt(item: Item, source: str | os.PathLike, max_chars: int = 900) -> str:
    """What the item's label says, as its format writes it, shortened for reading: the AIHub
    JSON, the COCO image entry with its annotations, or the mask file of a pair."""
    source = Path(source)
    if item.mask:
        mask = source_mask(item)
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
    return text if len(text) <= max_chars else text[:max_chars] + "\n..."


def discover(source: str | os.PathLike, fmt: str = "auto") -> tuple[str, Scan, list[Item], list[dict]]:
    """(format, scan, parts, skipped files with reasons) of a source folder, read but not
    prepared: what ``prepare`` reads, for a look before preparing (notebook 01)."""
    source = Path(source).expanduser().resolve()
    scan = scan_source(source)
    detected = detect_format(source, scan) if fmt == "auto" else fmt
    finder = {"aihub": discover_aihub, "coco": discover_coco, "pairs": discover_pairs}[detected]
    items, skipped = finder(source, scan)
    return detected, scan, _unique_stems(items, skipped), skipped


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
        atomic_write_bytes(out_dir / "images" / f"{item.stem}.png", _encode_png(image_out))
        atomic_write_bytes(out_dir / "masks" / f"{item.stem}.png",
                           _encode_png(Image.fromarray(mask_out, mode="L")))
    except ItemError as exc:
        return {"error": str(exc)}
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
        annotations.append({"segmentation": _rle_json(rle), "area": float(mask_utils.area(rle)),
                            "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                            "iscrowd": 0, "category_id": 1,
                            "attributes": {"quality": QUALITY_DEFECTIVE}})
    row = {"stem": item.stem, "source_image": item.source_image, "label_file": item.label_file,
           "quality": quality, "width": width, "height": height,
           "defect_share": round(union_area / (width * height), 6),
           "n_defects": len(annotations), "split": ""}
    return {"row": row, "annotations": annotations, "warnings": item.warnings}


def _prepare_task(task):
    return prepare_item(*task)


# --------------------------------------------------------------------------- splits

def assign_splits(rows: list[dict], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> None:
    """Deterministic split stratified by quality, written into each row's ``split``.

    Each stratum is ordered by a hash of (seed, stem), so a photo keeps its split when
    others are added; with 3 or more photos in a stratum, val and test get at least one.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative shares summing to 1, "
                         f"got {fractions}")
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


# --------------------------------------------------------------------------- the run

def _signature(item: Item, settings: Settings) -> str:
    parts = [settings.key(), item.stem, item.source_image, item.label_file,
             json.dumps(item.polygons), json.dumps([_rle_json(r) for r in item.rles
                                                    if not isinstance(r, list)], sort_keys=True)]
    for path in (item.image, item.label_path, item.mask):
        if path:
            stat = os.stat(path)
            parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _unique_stems(items: list[Item], skipped: list[dict]) -> list[Item]:
    seen: dict[str, str] = {}
    unique = []
    for item in items:
        if item.stem in seen:
            skipped.append({"file": item.source_image,
                            "reason": f"duplicate file name: stem {item.stem!r} is already "
                                      f"used by {seen[item.stem]}"})
            continue
        seen[item.stem] = item.source_image
        unique.append(item)
    return unique


def prepare(source: str | os.PathLike, out: str | os.PathLike, fmt: str = "auto",
            scale: float | str | None = "auto", max_side: int | None = None,
            size: int | None = None, fit: str = "stretch", split=(0.8, 0.1, 0.1), seed: int = 0,
            workers: int | None = None, progress: bool = True,
            max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> dict:
    """Prepare SOURCE into OUT (see the module docstring); returns the report dict.

    Geometry: by default (``scale="auto"``) photos keep their aspect ratio and are scaled so
    the narrowest defects stay about a pixel wide (:func:`estimate_scale`); ``scale=0.5``
    fixes the fraction, ``max_side`` caps the longer side; ``size=128`` instead squashes
    every photo into the 128-px square (``fit`` stretch or pad), the course's baseline.

    Raises PrepareError when SOURCE cannot be used at all; bad individual files (and photos
    over ``max_megapixels``, checked from their headers) are skipped and listed in the report
    with the reason.
    """
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise PrepareError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    try:
        Geometry(scale=None if scale == "auto" else scale, max_side=max_side, size=size, fit=fit)
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
    scan = scan_source(source)
    if not scan.images and not scan.jsons:
        raise PrepareError(f"SOURCE {source} contains no images or labels")
    detected = detect_format(source, scan) if fmt == "auto" else fmt
    discover = {"aihub": discover_aihub, "coco": discover_coco, "pairs": discover_pairs}[detected]
    items, skipped = discover(source, scan)
    items = _unique_stems(items, skipped)
    estimate = None
    if size is None and scale == "auto":
        estimate = estimate_scale(items)
        scale = estimate["scale"]
    geometry = Geometry(scale=None if size else float(scale), max_side=None if size else max_side,
                        size=int(size) if size else None, fit=fit)
    settings = Settings(geometry=geometry, max_megapixels=max_megapixels)

    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    try:
        state = json.loads(state_path.read_text("utf-8")) if state_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        state = {}
    new_state, todo = {}, []
    for item in items:
        signature = _signature(item, settings)
        previous = state.get(item.stem)
        if (previous and previous.get("signature") == signature
                and (out / "images" / f"{item.stem}.png").exists()
                and (out / "masks" / f"{item.stem}.png").exists()):
            new_state[item.stem] = previous
        else:
            todo.append((item, signature))

    workers = max(1, workers or os.cpu_count() or 1)
    tasks = [(item, settings, str(out)) for item, _ in todo]
    from tqdm.auto import tqdm
    bar = tqdm(total=len(tasks), desc="preparing", unit="img",
               disable=not progress or len(tasks) < 50)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(tasks) >= 32 else None
    results = (pool.map(_prepare_task, tasks, chunksize=16) if pool
               else map(_prepare_task, tasks))
    try:
        for (item, signature), result in zip(todo, results):
            bar.update()
            if "error" in result:
                skipped.append({"file": item.source_image, "reason": result["error"]})
                state.pop(item.stem, None)
                continue
            new_state[item.stem] = {"signature": signature, "row": result["row"],
                                    "annotations": result["annotations"],
                                    "warnings": result["warnings"]}
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    processed = len(todo)
    prepared = sum(1 for item, _ in todo if item.stem in new_state)
    warnings = [w for item in items if item.stem in new_state
                for w in new_state[item.stem].get("warnings", [])]

    rows = [dict(new_state[item.stem]["row"]) for item in items if item.stem in new_state]
    if not rows:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped).most_common(3)
        raise PrepareError(f"nothing in {source} could be prepared ({len(skipped)} files skipped; "
                           f"most common: {'; '.join(r for r, _ in reasons) or 'none found'})")
    assign_splits(rows, split, seed)
    _write_outputs(out, rows, new_state, source)
    atomic_write_json(state_path, new_state, indent=None)
    seconds = time.perf_counter() - started
    counts = Counter(r["quality"] for r in rows)
    splits = Counter(r["split"] for r in rows)
    report = {
        "source": str(source), "out": str(out.resolve()), "format": detected,
        "settings": geometry.as_dict() | {"min_coverage": settings.min_coverage,
                                          "split": list(split), "seed": seed,
                                          "max_megapixels": max_megapixels,
                                          "scale_estimate": estimate},
        "counts": {"images_found": len(scan.images), "labels_found": len(scan.jsons),
                   "prepared": prepared, "up_to_date": len(items) - processed,
                   "total": len(rows), "skipped": len(skipped),
                   "good": counts.get("good", 0), "defective": counts.get("defective", 0),
                   "train": splits.get("train", 0), "val": splits.get("val", 0),
                   "test": splits.get("test", 0)},
        "skipped": skipped, "warnings": warnings,
        "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 1) if processed else None,
        "workers": workers,
    }
    atomic_write_json(out / "report.json", report)
    return report


def defect_width(polygons: list) -> float:
    """Mean width in pixels of a defect drawn as polygon(s): ``2 * area / perimeter``, exact
    for a long thin strip (a scratch) and the radius for a round blob."""
    area = perimeter = 0.0
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
        area += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        perimeter += float(np.sum(np.hypot(*(xy - np.roll(xy, 1, axis=0)).T)))
    return 2 * area / perimeter if perimeter else 0.0


def mask_width(mask: np.ndarray) -> float:
    """:func:`defect_width` of a raster mask: the perimeter counts pixel edges."""
    mask = np.pad(np.asarray(mask, bool), 1)
    edges = np.count_nonzero(mask[:, 1:] != mask[:, :-1]) + np.count_nonzero(mask[1:] != mask[:-1])
    return 2 * float(mask.sum()) / edges if edges else 0.0


def estimate_scale(items: list[Item], min_width_px: float = MIN_DEFECT_WIDTH_PX,
                   sample: int = 400) -> dict:
    """The working scale for ``prepare --scale auto``: the smallest of 1, 1/2, 1/4, 1/8 at
    which the narrowest defects (5th percentile of their widths at source resolution, over
    up to ``sample`` defects) stay ``min_width_px`` wide. Squashing further erases them."""
    widths = []
    for item in items:
        widths += [defect_width(polys) for polys in item.polygons]
        if len(widths) >= sample:
            break
    if not widths:  # masks or RLE only: measure a few rasters
        for item in items[: sample // 4]:
            try:
                if item.mask:
                    with Image.open(item.mask) as handle:
                        raster = np.asarray(handle.convert("L")) > 127
                    if raster.any():
                        widths.append(mask_width(raster))
                widths += [mask_width(mask_utils.decode(rle)) for rle in item.rles
                           if isinstance(rle, dict) and not isinstance(rle.get("counts"), list)]
            except (OSError, ValueError):
                continue
    widths = [w for w in widths if w > 0]
    narrowest = float(np.percentile(widths, 5)) if widths else None
    return {"scale": pick_scale(narrowest, min_width_px), "min_width_px": min_width_px,
            "narrowest_defect_px": round(narrowest, 2) if narrowest else None,
            "median_defect_px": round(float(np.median(widths)), 2) if widths else None,
            "defects_measured": len(widths)}


def prepared_geometry(prepared: str | os.PathLike) -> Geometry:
    """The geometry a prepared folder was made with (from its ``report.json``)."""
    report = json.loads((Path(prepared) / "report.json").read_text(encoding="utf-8"))
    settings = report["settings"]
    if "scale" not in settings and "size" in settings:  # folders from before scale mode
        return Geometry(size=settings["size"], fit=settings.get("fit", "stretch"))
    return Geometry.from_dict(settings)


def _write_outputs(out: Path, rows: list[dict], state: dict, source: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", text.getvalue())

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


def load_manifest(prepared: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Rows of ``manifest.csv`` (numbers parsed), optionally of one split."""
    path = Path(prepared) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m scratch_utils prepare` first")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["width"], row["height"] = int(row["width"]), int(row["height"])
        row["defect_share"] = float(row["defect_share"])
        row["n_defects"] = int(row["n_defects"])
    return [r for r in rows if split is None or r["split"] == split]


def prepared_folder(profile, source: str | os.PathLike | None = None, square: int | None = None) -> Path:
    """Where a profile's prepared set lives: ``data/<profile>/prepared-scaled`` (or
    ``prepared-square128``) for the synthetic set, ``prepared-<folder name>-...`` for yours."""
    from .profiles import get_profile, profile_dir

    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    tag = f"square{square}" if square else "scaled"
    if source is None:
        return profile_dir(profile) / f"prepared-{tag}"
    return profile_dir(profile) / f"prepared-{Path(source).expanduser().name}-{tag}"


def ensure_prepared(profile=None, source: str | os.PathLike | None = None,
                    fmt: str = "auto", progress: bool = True, square: int | None = None) -> Path:
    """The prepared folder every notebook starts from, made if missing or out of date.

    With ``source=None`` the profile's synthetic AIHub-format set is generated first
    (``data/<profile>/synthetic``); with a folder of your own it is prepared instead, by
    the same code. The geometry is the automatic working scale, or with ``square=128`` the
    128-px squash (the baseline). Returns :func:`prepared_folder`.
    """
    from . import synthetic
    from .profiles import get_profile, profile_dir

    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    if source is None:
        source = profile_dir(profile) / "synthetic"
        synthetic.generate(source, count=profile.synth_count, seed=0,
                           width=profile.synth_width, height=profile.synth_height,
                           progress=progress)
        out = prepared_folder(profile, None, square)
    else:
        out = prepared_folder(profile, source, square)
    prepare(Path(source).expanduser(), out, fmt=fmt, size=square, progress=progress)
    return out
