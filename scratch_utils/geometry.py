"""How a photo becomes the model's input: one rule for ``prepare``, ``predict`` and the app.

Two modes (notebook 01):

- **scale** (the default): the photo keeps its aspect ratio and is resized by ``scale``
  (a fraction of its own resolution), capped so its longer side is at most ``max_side``.
  A 1280x720 photo at scale 0.5 becomes 640x360: a 2-pixel scratch stays a pixel wide.
  With ``extent`` instead of ``scale``, each photo gets its own scale, the one that gives it
  the pixels of an ``extent`` x ``extent`` square with its aspect kept: photos framed at
  different sizes (crops of parts) all reach one size, as the squash brings them, but no
  axis is stretched more than the other. On one camera's photos it is one scale for all.
- **square** (the earlier projects' baseline): the photo is squashed (``fit="stretch"``) or letterboxed
  (``fit="pad"``) into a ``size`` x ``size`` square. At 128 px a 1280x720 photo shrinks 10x
  along its width and a hairline scratch is gone.

Light to import (no TensorFlow): the app and ``prepare`` use it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FITS = ("stretch", "pad")
# Scales `prepare --scale auto` picks from: JPEGs decode at these scales directly
# (reduce-on-decode), and each prepared pixel is a whole block of source pixels.
AUTO_SCALES = (0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Layout:
    """Where a photo lands in the model input: a ``canvas`` of which the photo fills ``box``."""
    canvas_w: int
    canvas_h: int
    box_w: int
    box_h: int
    x0: int = 0
    y0: int = 0


@dataclass(frozen=True)
class Geometry:
    scale: float | None = None     # scale mode: fraction of the source resolution
    max_side: int | None = None    # scale mode: cap on the longer side, in pixels
    size: int | None = None        # square mode: side of the square (the earlier projects: 128)
    fit: str = "stretch"           # square mode: stretch or pad
    extent: int | None = None      # scale mode, per photo: the side of the square whose pixels it gets

    def __post_init__(self):
        if self.extent is not None:
            if self.size is not None or self.scale is not None:
                raise ValueError("extent sets each photo's own scale: give it without scale or size")
            if not 16 <= int(self.extent) <= 4096:
                raise ValueError(f"extent {self.extent} is out of range (16..4096)")
        if self.size is not None:
            if not 16 <= int(self.size) <= 4096:
                raise ValueError(f"size {self.size} is out of range (16..4096)")
            if self.fit not in FITS:
                raise ValueError(f"unknown fit {self.fit!r}: choose one of {', '.join(FITS)}")
        elif self.scale is not None and not 0 < float(self.scale) <= 1:
            raise ValueError(f"scale {self.scale} must be a fraction in (0, 1]")
        if self.max_side is not None and int(self.max_side) < 16:
            raise ValueError(f"max_side {self.max_side} must be at least 16 pixels")

    @property
    def square(self) -> bool:
        return self.size is not None

    def scale_for(self, width: int, height: int) -> float:
        """The scale a ``width`` x ``height`` photo gets (scale mode)."""
        scale = (self.extent / float(np.sqrt(width * height)) if self.extent
                 else float(self.scale or 1.0))
        if self.max_side:
            scale = min(scale, self.max_side / max(width, height))
        return scale

    def layout(self, width: int, height: int) -> Layout:
        if self.square:
            size = int(self.size)
            if self.fit == "stretch":
                return Layout(size, size, size, size)
            scale = size / max(width, height)
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            return Layout(size, size, w, h, (size - w) // 2, (size - h) // 2)
        scale = self.scale_for(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return Layout(w, h, w, h)

    def describe(self) -> str:
        if self.square:
            return f"{self.size}x{self.size} square ({self.fit})"
        if self.extent:
            text = f"each photo to the pixels of a {self.extent}-px square, aspect kept"
        else:
            text = f"scale {self.scale:g}" if self.scale else "full resolution"
        return text + (f", longer side at most {self.max_side} px" if self.max_side else "")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Geometry":
        return cls(**{k: values.get(k) for k in ("scale", "max_side", "size", "extent")},
                   fit=values.get("fit") or "stretch")


def pick_scale(narrowest_px: float | None, min_width_px: float = 1.0) -> float:
    """The smallest of :data:`AUTO_SCALES` at which a defect ``narrowest_px`` wide at source
    resolution is still ``min_width_px`` wide; 1.0 when nothing is known or nothing suffices."""
    if not narrowest_px:
        return 1.0
    for scale in AUTO_SCALES:
        if narrowest_px * scale >= min_width_px:
            return scale
    return 1.0


def polygon_area(xy) -> float:
    """Area of a polygon given as (N, 2) points or a flat ``[x1, y1, x2, y2, ...]`` (shoelace)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
