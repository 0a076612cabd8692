"""Reading the three source formats: which photos there are and what their labels say (notebook 01).

- ``aihub``: one JSON label per photo (AIHub "car part quality inspection": UTF-8 with or
  without BOM, ``images[0].file_name``, ``annotations[].segmentation`` as a flat polygon,
  ``attributes.quality`` 양품/불량품); photos found by file name anywhere under SOURCE.
- ``coco``: one or more COCO instance files (a Roboflow export: ``_annotations.coco.json``
  beside its images); every annotation is a defect unless it says ``quality: 양품``.
- ``pairs``: ``images/`` + ``masks/`` with matching stems, or folders ``X`` + ``X_labels``
  (or ``X_masks``) paired by stem or by sorted name (the medical course layout).

Each label is checked as it is read; a bad file becomes one line of ``skipped`` naming it and
the problem, and the run goes on. Nothing under SOURCE is ever written, moved or deleted.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ItemError, PrepareError
from .files import IMAGE_EXTENSIONS, is_within, list_images
from .labels import aihub_defects, check_plain_file_name, coco_defects, read_json_label

FORMATS = ("auto", "aihub", "coco", "pairs")


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


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
            warnings: list[str] = []
            quality, polygons = aihub_defects(payload.get("annotations") or [], (width, height),
                                              label_rel, warnings)
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


def _coco_files(source: Path, scan: Scan, skipped: list) -> list[tuple[Path, dict]]:
    """The COCO instance files under SOURCE; other JSON files go to ``skipped``."""
    found = []
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
        found.append((path, payload))
    if not found:
        raise PrepareError(f"no COCO instance JSON found under {source}")
    return found


def discover_coco(source: Path, scan: Scan) -> tuple[list[Item], list[dict]]:
    skipped = list(scan.skipped)
    items, used = [], set()
    mentioned: set[Path] = set()  # photos named by an entry, valid or not: reported once, via it
    for coco_path, payload in _coco_files(source, scan, skipped):
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
                polygons, rles = coco_defects(by_image.get(meta.get("id"), []), (width, height),
                                               where, warnings)
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

    items = []
    prefix_groups = len(folders) > 1
    for image_dir, mask_dir in folders:
        photos, masks = list_images(image_dir), list_images(mask_dir)
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


def discover(source: str | os.PathLike, fmt: str = "auto", scan: Scan | None = None
             ) -> tuple[str, Scan, list[Item], list[dict]]:
    """(format, scan, parts, skipped files with reasons) of a source folder, read and checked
    but not prepared: what ``prepare`` reads, and a look before preparing (notebook 01)."""
    source = Path(source).expanduser().resolve()
    scan = scan or scan_source(source)
    detected = detect_format(source, scan) if fmt == "auto" else fmt
    finder = {"aihub": discover_aihub, "coco": discover_coco, "pairs": discover_pairs}[detected]
    items, skipped = finder(source, scan)
    return detected, scan, _unique_stems(items, skipped), skipped
