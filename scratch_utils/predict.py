"""Prediction on whole photos: one code path for ``predict``, ``evaluate``, the notebooks and the app.

A photo is brought to the run's working geometry exactly as ``prepare`` does it
(:func:`scratch_utils.photos.model_input_image`), the fully convolutional model runs on the
whole of it (padded to a multiple of its stride), and the probability map is resized back
to the photo's own size: the mask a user gets, and the one scores are computed on.

Photos too large to run in one piece (a 6000x4000 phone photo at working scale) are cut
into overlapping tiles whose cores are stitched: every tile starts on the stride grid and
reaches ``margin`` pixels past its core, more than the models' receptive field, so the
stitched map equals the whole-photo map (no seams) and memory stays bounded.

Introduced in notebook 03; imports no training code (the app loads only this).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decision import called_defective, feature_model, head_input, head_scores, peak_pixel, region_call
from .errors import ItemError
from .files import atomic_write_bytes, atomic_write_text, is_within, list_images
from .limits import DEFAULT_MAX_MEGAPIXELS
from .photos import mask_image, model_input_image, open_photo, overlay_image, png_bytes
from .runs import load_operating_point, load_part_head, load_run_config, load_run_model, run_geometry

STRIDE = 16                 # every model pools four times
WHOLE_PHOTO_PIXELS = 2**21  # above ~2 MP of model input, predict tile by tile
TILE_CORE = 1024
TILE_MARGIN = 192           # > the receptive-field radius of every model here (~170 px)


def reflect_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` extended at its bottom and right to at least ``height`` x ``width`` by
    reflection (edge repetition for a photo of a pixel or two): how whole photos are padded,
    and training tiles of photos smaller than a tile (:func:`scratch_utils.pipeline.make_tile_dataset`)."""
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not (pad_h or pad_w):
        return image
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def _pad_to_stride(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return reflect_pad(image, height + (-height % STRIDE), width + (-width % STRIDE))


def _spans(length: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, core start, core end) along one axis, all on the stride grid."""
    spans = []
    for start in range(0, length, core):
        end = min(length, start + core)
        spans.append((max(0, start - margin), min(length, end + margin), start, end))
    return spans


def model_outputs(model, image: np.ndarray, max_pixels: int = WHOLE_PHOTO_PIXELS,
                  core: int = TILE_CORE, margin: int = TILE_MARGIN) -> list[np.ndarray]:
    """Every output of ``model`` for one image (H, W, 3) in [0, 1] at model resolution: the
    defect probability (H, W) first, then (for a model with features) each (H, W, C).

    Runs the whole image when it has at most ``max_pixels`` pixels, else overlapping
    tiles (``core`` + ``margin`` on each side); both give the same maps.
    """
    if core % STRIDE or margin % STRIDE:
        raise ValueError(f"core and margin must be multiples of {STRIDE}")
    height, width = image.shape[:2]
    padded = _pad_to_stride(np.asarray(image, dtype=np.float32))

    def run(window):
        out = model.predict_on_batch(window[None])
        return [np.asarray(o, np.float32)[0] for o in (out if isinstance(out, (list, tuple)) else [out])]

    if padded.shape[0] * padded.shape[1] <= max_pixels:
        outputs = [o[:height, :width] for o in run(padded)]
    else:
        outputs = None
        for y0, y1, cy0, cy1 in _spans(padded.shape[0], core, margin):
            for x0, x1, cx0, cx1 in _spans(padded.shape[1], core, margin):
                pieces = run(padded[y0:y1, x0:x1])
                if outputs is None:
                    outputs = [np.empty(padded.shape[:2] + p.shape[2:], np.float32) for p in pieces]
                for whole, piece in zip(outputs, pieces):
                    whole[cy0:cy1, cx0:cx1] = piece[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        outputs = [o[:height, :width] for o in outputs]
    return [outputs[0][..., 0], *outputs[1:]]


def probability_map(model, image: np.ndarray, **tiling) -> np.ndarray:
    """Defect probability (H, W) for one image (H, W, 3) in [0, 1] at model resolution
    (:func:`model_outputs`' first)."""
    return model_outputs(model, image, **tiling)[0]


def resize_probability(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A probability map resized (bilinear) to ``size`` = (width, height)."""
    if probability.shape[::-1] == tuple(size):
        return probability
    return np.asarray(Image.fromarray(np.asarray(probability, np.float32)).resize(
        tuple(size), Image.Resampling.BILINEAR))


@dataclass
class PhotoPrediction:
    """What :meth:`Predictor.predict_photo` tells of one photo, at its own size unless named."""
    probability: np.ndarray          # defect probability, the photo's size
    mask: np.ndarray                 # pixels at or above the mask threshold, the photo's size
    defective: bool                  # the part's call
    score: float                     # what decided it: the part head's score, or the largest region (px)
    rule: str                        # head | regions
    deciding_regions: np.ndarray     # where the call points, the photo's size
    model_mask: np.ndarray           # the mask at model resolution
    scale: tuple                     # photo pixels per model pixel, (x, y)

    @property
    def defect_area_share(self) -> float:
        return float(self.mask.mean())

    @property
    def max_probability(self) -> float:
        return float(self.probability.max()) if self.probability.size else 0.0


def _fresh(source):
    """A path, or a new stream over an upload's bytes (each decode reads from the start)."""
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)


@dataclass
class OpenedPhoto:
    """A photo as :meth:`Predictor.open` read it: ``model_photo`` decoded the way preparation
    decodes it, ``size`` the photo's own size as people see it (EXIF applied), and the photo
    itself, decoded only when something draws it (:meth:`photo`)."""
    model_photo: Image.Image
    size: tuple
    source: object = None
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
    _photo: Image.Image | None = None

    def photo(self) -> Image.Image:
        """The photo at its own resolution, as people see it."""
        if self._photo is None:
            self._photo = (self.model_photo if self.model_photo.size == tuple(self.size) or self.source is None
                           else open_photo(_fresh(self.source), exif="always", max_megapixels=self.max_megapixels)[0])
        return self._photo


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at ``size`` = (width, height), nearest neighbour."""
    if mask.shape[::-1] == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(tuple(size), Image.Resampling.NEAREST)) > 0


class Predictor:
    """A run's model with its geometry and operating point: the same mask and the same
    pass/fail call for ``predict``, ``evaluate``, the notebooks and the app.

    The mask shows pixels at or above the point's ``mask_threshold``; the part is called by the
    point's rule (:mod:`scratch_utils.decision`): the part head's score, or one connected region
    reaching ``min_region`` pixels by its ``region_measure``. Each keyword given here overrides
    the one value it names (:meth:`scratch_utils.decision.OperatingPoint.with_overrides`).
    Photos over ``max_megapixels`` (read from the header) are refused before decoding."""

    def __init__(self, run: str | os.PathLike, mask_threshold: float | None = None,
                 decision_threshold: float | None = None, min_region: int | None = None,
                 region_measure: str | None = None, model=None,
                 max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS):
        self.run = Path(run)
        self.geometry = run_geometry(load_run_config(run))
        self.point = load_operating_point(run).with_overrides(mask_threshold, decision_threshold, min_region,
                                                              region_measure)
        self.model = model if model is not None else load_run_model(run)
        self.head = load_part_head(run) if self.point.rule == "head" else None
        self.max_megapixels = max_megapixels
        self._network = None

    @property
    def network(self):
        """What runs on a photo: the model, with its features beside the mask for a part head."""
        if self.head is None:
            return self.model
        if self._network is None or self._network[0] is not self.model:
            self._network = (self.model, feature_model(self.model))
        return self._network[1]

    def open(self, source) -> "OpenedPhoto":
        """A photo (a path or the bytes of an upload) decoded the way preparation decodes it:
        JPEGs at a reduced scale (reduce-on-decode), so the model sees the pixels ``prepare``
        wrote. EXIF orientation is applied, so the mask matches the displayed photo; the photo at
        its own resolution is decoded only when something draws it (:meth:`OpenedPhoto.photo`).
        Bad input: ``ItemError`` (``PhotoTooLarge`` over the pixel budget, before anything is decoded).
        """
        model_photo, full = open_photo(_fresh(source), self.geometry, exif="always",
                                       max_megapixels=self.max_megapixels)
        return OpenedPhoto(model_photo, tuple(full), source, self.max_megapixels)

    def model_input(self, photo: Image.Image, full_size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, object]:
        """Model input in [0, 1], pixel for pixel what ``prepare`` writes, and its layout;
        ``full_size`` is the photo's own size when ``photo`` was decoded at a reduced scale."""
        layout = self.geometry.layout(*(full_size or photo.size))
        image = model_input_image(photo, layout)
        return np.asarray(image, dtype=np.float32) / 255.0, layout

    def predict_photo(self, photo: "OpenedPhoto | Image.Image") -> PhotoPrediction:
        """The mask at the photo's own size, the part's call and where it points.

        Pass what :meth:`open` returns to match preparation pixel for pixel; an image already
        in memory is resized from its full resolution (nearly the same)."""
        opened = photo if isinstance(photo, OpenedPhoto) else OpenedPhoto(photo, photo.size)
        width, height = opened.size
        x, layout = self.model_input(opened.model_photo, (width, height))
        outputs = model_outputs(self.network, x)
        box = (slice(layout.y0, layout.y0 + layout.box_h), slice(layout.x0, layout.x0 + layout.box_w))
        content, point = outputs[0][box], self.point
        if self.head is not None:
            score = float(head_scores(self.head, [head_input(content, outputs[1][box])])[0])
            defective = score >= point.decision_threshold
            masked = content >= point.mask_threshold
            deciding = masked if masked.any() else peak_pixel(content)
        else:
            largest, deciding = region_call(content >= point.decision_threshold, point.region_measure,
                                            point.min_region)
            score, defective = float(largest), bool(called_defective(largest, point.min_region))
        full = resize_probability(content, (width, height))
        return PhotoPrediction(
            probability=full, mask=full >= point.mask_threshold, defective=bool(defective), score=score,
            rule=point.rule, model_mask=content >= point.mask_threshold,
            deciding_regions=_resized_mask(deciding, (width, height)),
            scale=(width / layout.box_w, height / layout.box_h))


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return list_images(path, recursive=True)
    raise FileNotFoundError(f"input {path} does not exist")


PREDICTION_FIELDS = ["stem", "source", "defective", "score", "defect_area_share", "max_probability"]


def predict(run, inputs, out, progress: bool = True,
            max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, **overrides) -> dict:
    """Masks (0/255, the photo's own size), overlays and ``predictions.csv`` for photos;
    unreadable photos and photos over ``max_megapixels`` are skipped with the reason.
    ``overrides`` (``mask_threshold``, ``decision_threshold``, ``min_region``) replace the
    run's values they name."""
    from tqdm.auto import tqdm

    inputs, out = Path(inputs), Path(out)
    source_dir = inputs if inputs.is_dir() else inputs.parent
    if is_within(out, source_dir):
        raise ValueError(f"the output folder {out} is inside the input folder {source_dir}; "
                         f"choose a folder outside it (inputs are never written to)")
    predictor = Predictor(run, max_megapixels=max_megapixels, **overrides)
    paths = _inputs(inputs)
    rows, skipped = [], []
    for path in tqdm(paths, desc="predicting", unit="img", disable=not progress or len(paths) < 20):
        try:
            opened = predictor.open(path)
        except ItemError as exc:
            skipped.append({"file": str(path), "reason": str(exc)})
            continue
        result = predictor.predict_photo(opened)
        stem = (path.stem if inputs.is_file()
                else path.relative_to(inputs).with_suffix("").as_posix().replace("/", "__"))
        atomic_write_bytes(out / f"{stem}.png", png_bytes(mask_image(result.mask)))
        atomic_write_bytes(out / f"{stem}_overlay.png", png_bytes(overlay_image(opened.photo(), result.mask)))
        rows.append({"stem": stem, "source": str(path), "defective": "yes" if result.defective else "no",
                     "score": round(result.score, 4), "defect_area_share": round(result.defect_area_share, 6),
                     "max_probability": round(result.max_probability, 4)})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=PREDICTION_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "predictions.csv", table.getvalue())
    return {"predicted": len(rows), "skipped": skipped, "out": str(out),
            "defective": sum(r["defective"] == "yes" for r in rows)}
