"""Masks: label polygons, RLEs and mask files -> defect masks at the photo's own resolution
and at the working geometry (pycocotools; notebook 01).

A mask is the union of a photo's defect polygons. Resized to the working geometry, a pixel is
defect when a quarter of it is covered, and a thin defect (a scratch narrower than a prepared
pixel) keeps every pixel it touches, so no scratch is ever dropped or broken into dashes.
"""
from __future__ import annotations


import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from .photos import read_mask_file
from .sources import Item

# A prepared mask pixel is "defect" when at least this share of it is covered at source
# resolution; a thin defect (its area is under half the pixels it touches, as for a
# scratch thinner than a prepared pixel) keeps every pixel it touches, so
# downscaling never erases a scratch or breaks it into dashes.
MIN_COVERAGE = 0.25
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


def rle_json(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def prepared_mask(item: Item, size: tuple[int, int], layout, min_coverage: float = MIN_COVERAGE
                  ) -> tuple[np.ndarray, float]:
    """An item's defect mask in its layout's box (bool) and its defect area at source
    resolution, for any source format: polygons and RLEs via pycocotools, mask files read.

    A prepared pixel is defect when ``min_coverage`` of it is covered; a thin defect keeps
    every pixel it touches, so no scratch is dropped."""
    width, height = size
    box_w, box_h = layout.box_w, layout.box_h
    if item.mask:
        full_mask = read_mask_file(item.mask, (width, height))
        item.rles = [mask_utils.encode(np.asfortranarray(full_mask))] if full_mask.any() else []
    rles = source_rles(item, width, height)
    coverages = [polygon_coverage(polys, width, height, (box_w, box_h)) for polys in item.polygons]
    coverages += [raster_coverage(mask_utils.decode(rle), (box_w, box_h)) for rle in item.rles]
    small = np.zeros((box_h, box_w), dtype=bool)
    for k, (rle, coverage) in enumerate(zip(rles, coverages)):
        kept = coverage >= min_coverage
        # pycocotools' area is a uint32: in floats, a large defect on a large box cannot overflow
        area_in_pixels = float(mask_utils.area(rle)) * box_w * box_h / (width * height)
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
        return read_mask_file(item.mask, size).astype(bool)
    rles = source_rles(item, *size)
    if not rles:
        return np.zeros(size[::-1], dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def item_quality(item: Item) -> str:
    """good / defective: the label's word, or for mask folders whether the mask has a defect."""
    return item.quality or ("defective" if source_mask(item).any() else "good")


def narrowest_defect(item: Item) -> float:
    """Width in pixels of the item's narrowest defect at source resolution (0 for a good part)."""
    return min((width for width, _ in defect_measures(item)), default=0.0)


def defect_measures(item: Item) -> list[tuple[float, int]]:
    """``(width, length)`` in pixels of each of an item's defects at source resolution
    (:func:`raster_measures`), the same measure whatever the label format: polygons are
    rasterised first (each defect in its own box); a mask file or RLE is split into connected
    regions, so a stray speck is a defect of length 1."""
    if item.polygons:
        return [raster_measures(polygon_raster(polys)) for polys in item.polygons]
    mask = source_mask(item)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [raster_measures(labels[box] == k) for k, box in enumerate(ndimage.find_objects(labels), start=1)]


def polygon_raster(polygons: list) -> np.ndarray:
    """A defect's polygons rasterised at source resolution (pycocotools), cropped to their box."""
    xy = [np.asarray(poly, dtype=np.float64).reshape(-1, 2) for poly in polygons]
    origin = np.floor(np.concatenate(xy).min(axis=0)) - 1
    shifted = [(points - origin).reshape(-1).tolist() for points in xy]
    width, height = (np.ceil(np.concatenate(xy).max(axis=0) - origin) + 2).astype(int)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(shifted, height, width))).astype(bool)


def raster_measures(mask: np.ndarray) -> tuple[float, int]:
    """``(width, length)`` of one defect's raster: the length of its skeleton
    (``skimage.morphology.skeletonize``) and its mean width, its area over that length. A
    scratch w px wide and L long measures about (w, L); a ragged outline (a polygon traced from
    a mask) changes neither the area nor the skeleton much, so polygon labels and mask files of
    the same defect agree."""
    from skimage.morphology import skeletonize
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if not area:
        return 0.0, 0
    length = max(1, int(skeletonize(mask).sum()))
    return area / length, length
