"""The embedded default dataset: synthetic painted car panels in the AIHub label format.

Introduced in notebook 01. Each part is a photo of a painted panel (paint colour with
metallic flake, curved-panel shading, reflection bands, specular highlights, orange
peel, dust specks, panel gaps and edges) and, on about 60% of parts, one to three
defects: thin curved scratches of varying width and contrast, lighter or darker than
the paint and partly faded, and now and then a larger scuff.

Labels follow the AIHub "car part quality inspection" schema the earlier projects read: one JSON
per photo, UTF-8 with BOM, ``images[0]`` with file_name/height/width/date_captured and
``annotations[]`` with bbox/area/segmentation (one flat polygon)/attributes.quality.
A good part carries one ``양품`` annotation outlining the inspected panel; a defective
part carries one ``불량품`` annotation per defect.

Every part depends only on ``(seed, index)``, so generation is deterministic, parallel
and extendable (600 parts are the first 600 of 1,000).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import QUALITY_DEFECTIVE, QUALITY_GOOD
from .files import atomic_write_bytes, atomic_write_json
from .geometry import polygon_area
from .parallel import parallel_map

GOOD_FRACTION = 0.4
# A defect drawn with ``visible`` stands at least this many 8-bit levels (the distance of its median
# colour to the paint's) from the paint around it: four times the camera's noise. Without it, a light scratch can land on
# white paint, or a dark one on black, a few levels from the paint (benchmarks/bench_visibility.py).
VISIBLE_LEVELS = 8.0
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
LIGHT_SCRATCH, DARK_SCRATCH = np.array([0.88, 0.88, 0.87]) * 0.95, np.array([0.30, 0.30, 0.31]) * 0.7

# Base colours of common car paints (sRGB, 0..1) and whether they are metallic.
PAINTS = [
    ((0.92, 0.92, 0.90), False),  # solid white
    ((0.86, 0.86, 0.84), True),   # pearl white
    ((0.72, 0.73, 0.74), True),   # silver
    ((0.42, 0.43, 0.45), True),   # titanium grey
    ((0.22, 0.23, 0.25), True),   # graphite
    ((0.05, 0.05, 0.06), False),  # solid black
    ((0.60, 0.05, 0.06), False),  # red
    ((0.45, 0.04, 0.08), True),   # dark cherry
    ((0.07, 0.19, 0.48), True),   # blue
    ((0.08, 0.24, 0.17), True),   # dark green
    ((0.74, 0.68, 0.56), True),   # champagne
    ((0.85, 0.42, 0.07), False),  # orange
]


@dataclass(frozen=True)
class PartSpec:
    index: int
    seed: int
    width: int
    height: int
    good_fraction: float = GOOD_FRACTION
    visible: bool = False          # every defect drawn at least VISIBLE_LEVELS from its paint

    @property
    def stem(self) -> str:
        return f"paint_s{self.seed:03d}_{self.index:05d}"


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, 20261122])


def _upsample(field: np.ndarray, width: int, height: int,
              resample=Image.Resampling.BILINEAR) -> np.ndarray:
    """Upsampling of a low-resolution float field: smooth structure for cheap."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(field, dtype=np.float32))
                      .resize((width, height), resample))


def _smooth_noise(rng, width, height, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about ``cells`` blobs across the width."""
    ch = max(2, round(cells * height / width))
    field = rng.random((ch, cells)).astype(np.float32)
    return np.clip(_upsample(field, width, height, Image.Resampling.BICUBIC), 0, 1)


def _panel_light(rng, width, height) -> tuple[np.ndarray, np.ndarray]:
    """Shading of a curved panel and the sky/ceiling-light reflections on it (low res)."""
    lw, lh = max(16, width // 8), max(16, height // 8)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    yy /= lh - 1
    xx /= lw - 1
    curve = rng.uniform(0.6, 1.6)
    centre = rng.uniform(0.2, 0.8)
    shading = 0.72 + 0.28 * np.cos(np.pi * (yy - centre) * curve) ** 2
    shading *= 1.0 + rng.uniform(-0.12, 0.12) * (xx - 0.5)
    reflection = np.zeros_like(xx)
    for _ in range(rng.integers(1, 4)):
        angle = rng.uniform(-0.5, 0.5)
        bend = rng.uniform(-0.6, 0.6)
        offset = rng.uniform(0.1, 0.9)
        band_width = rng.uniform(0.02, 0.12)
        distance = (yy * math.cos(angle) + xx * math.sin(angle)
                    + bend * (xx - 0.5) ** 2 - offset)
        reflection += rng.uniform(0.15, 0.45) * np.exp(-(distance / band_width) ** 2)
    for _ in range(rng.integers(0, 3)):
        cy, cx = rng.uniform(0, 1, 2)
        sigma = rng.uniform(0.01, 0.04)
        reflection += rng.uniform(0.4, 0.9) * np.exp(
            -(((yy - cy) * lh / lw) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return _upsample(shading, width, height), _upsample(reflection, width, height)


def _curve_points(rng, start, length, n_points, bend) -> np.ndarray:
    """Points along a cubic Bezier from ``start``: a gently curved stroke."""
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    p0 = np.asarray(start, dtype=np.float64)
    p3 = p0 + direction * length
    p1 = p0 + direction * length / 3 + normal * bend * length * rng.uniform(-1, 1)
    p2 = p0 + direction * 2 * length / 3 + normal * bend * length * rng.uniform(-1, 1)
    t = np.linspace(0, 1, n_points)[:, None]
    return ((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1
            + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3)


def _stroke_outline(points: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """Closed outline polygon of a stroke with a varying half width."""
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    left = points + normal * half_widths[:, None]
    right = points - normal * half_widths[:, None]
    return np.concatenate([left, right[::-1]], axis=0)


def _blob_outline(rng, centre, radius, n_points=28) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    wobble = 1 + sum(rng.uniform(-0.25, 0.25) * np.cos(k * theta + rng.uniform(0, 6.3))
                     for k in (2, 3, 5))
    ratio = rng.uniform(0.4, 1.0)
    return np.stack([centre[0] + radius * wobble * np.cos(theta),
                     centre[1] + radius * ratio * wobble * np.sin(theta)], axis=1)


def _fill(polygon: np.ndarray, width: int, height: int, blur: float) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a polygon, for rendering."""
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=255)
    if blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _blend(image, alpha, colour):
    image *= 1 - alpha[..., None]
    image += alpha[..., None] * np.asarray(colour, dtype=np.float32)


def _flat_polygon(polygon: np.ndarray, width: int, height: int) -> list[float]:
    clipped = np.clip(polygon, [0, 0], [width - 1, height - 1])
    return [round(float(v), 1) for v in clipped.reshape(-1)]


def _polygon_area_bbox(flat: list[float]) -> tuple[float, list[float]]:
    xy = np.asarray(flat).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    area = polygon_area(xy)
    x0, y0 = float(x.min()), float(y.min())
    return round(area, 1), [round(x0, 1), round(y0, 1),
                            round(float(x.max()) - x0, 1), round(float(y.max()) - y0, 1)]


def render_part(spec: PartSpec) -> tuple[np.ndarray, dict, bool]:
    """Render one part: ``(uint8 RGB image, AIHub label dict, is_defective)``. The steps draw
    from one random stream in a fixed order, so a part depends only on (seed, index)."""
    rng = _rng(spec.seed, spec.index)
    w, h = spec.width, spec.height
    scale = w / 1280.0
    defective = rng.random() >= spec.good_fraction
    image = _paint(rng, w, h)
    image, panel_region = _seam_and_edge(rng, image, w, h, scale)
    _dust(rng, image, w, h, scale)
    annotations = _defects(rng, image, w, h, scale, spec.visible) if defective else _panel_label(panel_region, w, h)
    pixels = _camera(rng, image, w, h)
    captured = datetime(2026, 3, 2, 8, 0, 0) + timedelta(seconds=37 * spec.index + 3600 * spec.seed)
    label = {
        "images": [{"id": 1, "file_name": f"{spec.stem}.jpg", "height": h, "width": w,
                    "date_captured": captured.strftime("%Y-%m-%d %H:%M:%S")}],
        "annotations": annotations,
    }
    return pixels, label, defective


def _paint(rng, w: int, h: int) -> np.ndarray:
    """Paint colour with metallic flake, curved-panel shading and reflection bands."""
    base, metallic = PAINTS[rng.integers(len(PAINTS))]
    base = np.clip(np.asarray(base) * rng.uniform(0.93, 1.07, 3), 0, 1).astype(np.float32)
    shading, reflection = _panel_light(rng, w, h)
    peel = _smooth_noise(rng, w, h, cells=int(rng.integers(40, 90))) - 0.5
    image = base[None, None, :] * (shading * (1 + 0.05 * peel))[..., None]
    tint = np.asarray([0.95, 0.97, 1.0], dtype=np.float32)
    image += (reflection * (1.0 - 0.5 * base.mean()))[..., None] * tint

    flake_strength = rng.uniform(0.02, 0.05) if metallic else rng.uniform(0.004, 0.01)
    flake = rng.standard_normal((h, w), dtype=np.float32) * flake_strength
    sparkle = (rng.random((h, w), dtype=np.float32) < (0.002 if metallic else 0.0002))
    image += (flake + sparkle * rng.uniform(0.2, 0.5))[..., None]
    return image


def _seam_and_edge(rng, image: np.ndarray, w: int, h: int, scale: float):
    """A panel gap (door seam) and the neighbouring panel beyond it, sometimes the part's edge:
    long, dark, not defects. Returns the image and where the inspected panel is."""
    panel_region = np.ones((h, w), dtype=np.float32)
    if rng.random() < 0.6:
        vertical = rng.random() < 0.5
        n = 40
        t = np.linspace(-0.05, 1.05, n)
        pos = rng.uniform(0.08, 0.3) if rng.random() < 0.5 else rng.uniform(0.7, 0.92)
        bow = rng.uniform(-0.04, 0.04)
        along = t * (h if vertical else w)
        across = (pos + bow * (t - 0.5) ** 2 * 4) * (w if vertical else h)
        line = np.stack([across, along], 1) if vertical else np.stack([along, across], 1)
        gap = Image.new("L", (w, h), 0)
        gap_width = max(2, int(rng.uniform(4, 9) * scale))
        ImageDraw.Draw(gap).line([tuple(p) for p in line], fill=255, width=gap_width)
        gap_alpha = np.asarray(gap.filter(ImageFilter.GaussianBlur(1.2 * scale + 0.5)),
                               np.float32) / 255.0
        far_side = np.concatenate([line, [[w, h] if vertical else [w, h],
                                          [w, 0] if vertical else [0, h]]])
        if rng.random() < 0.5:  # the neighbour is on the other side of the seam
            far_side = np.concatenate([line, [[0, h] if vertical else [w, 0], [0, 0]]])
        neighbour = _fill(far_side, w, h, blur=1.0)
        image *= (1 - neighbour * rng.uniform(0.1, 0.3))[..., None]
        panel_region -= neighbour
        _blend(image, gap_alpha * 0.9, (0.02, 0.02, 0.025))
    if rng.random() < 0.3:  # edge of the part: the dark booth background shows
        edge = _blob_outline(rng, (rng.choice([-0.35, 1.35]) * w, rng.uniform(0, h)),
                             radius=w * rng.uniform(0.45, 0.6), n_points=120)
        outside = _fill(edge, w, h, blur=1.5)
        background = 0.08 + 0.04 * _smooth_noise(rng, w, h, cells=12)
        image = image * (1 - outside[..., None]) + (outside * background)[..., None]
        panel_region -= outside
    return image, panel_region


def _dust(rng, image: np.ndarray, w: int, h: int, scale: float) -> None:
    """Dust specks: small round dots, dark or bright, on every part (drawn in place)."""
    specks = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(specks)
    for _ in range(int(rng.integers(3, 25))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.8, 3.5) * max(scale, 0.5)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(120, 255)))
    speck_alpha = np.asarray(specks.filter(ImageFilter.GaussianBlur(0.7)), np.float32) / 255
    _blend(image, speck_alpha * 0.8, (0.12, 0.11, 0.10) if rng.random() < 0.7 else (0.95,) * 3)


def _visible_tone(image: np.ndarray, alpha: np.ndarray, colour, contrast: float) -> tuple[np.ndarray, float]:
    """A defect's colour and contrast, changed only where it would stand under
    ``VISIBLE_LEVELS`` from the paint it covers (the distance of the two colours, in 8-bit
    levels): the other tone (dark on light paint, light on dark) if that shows more, then as
    much more contrast as the floor asks (at most full)."""
    covered = alpha >= 0.5 * alpha.max()
    paint = np.median(image[covered], axis=0)
    strength = float(np.median(alpha[covered]))

    def levels(tone, amount):
        return 255 * float(np.linalg.norm(np.asarray(tone) - paint)) * amount * strength

    if levels(colour, contrast) >= VISIBLE_LEVELS:
        return colour, contrast
    other = DARK_SCRATCH if float(np.asarray(colour) @ LUMA) > float(paint @ LUMA) else LIGHT_SCRATCH
    if levels(other, contrast) > levels(colour, contrast):
        colour = other
    shown = levels(colour, 1.0)
    return colour, min(1.0, max(contrast, VISIBLE_LEVELS / shown if shown > 0 else 1.0))


def _defects(rng, image: np.ndarray, w: int, h: int, scale: float, visible: bool = False) -> list[dict]:
    """One to three scratches (now and then a scuff), drawn on ``image`` in place; their
    label annotations, traced a little outside the visible stroke as annotators do. With
    ``visible``, none is drawn under :data:`VISIBLE_LEVELS` from its paint (the random draws,
    and so every shape, stay the same)."""
    annotations = []
    n_defects = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    for _ in range(n_defects):
        start = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
        lighter = rng.random() < 0.65
        colour = (np.array([0.88, 0.88, 0.87]) * rng.uniform(0.85, 1.05) if lighter
                  else np.array([0.30, 0.30, 0.31]) * rng.uniform(0.2, 1.2))
        contrast = rng.uniform(0.35, 0.95)
        if rng.random() < 0.12:  # scuff: a larger hazy area
            outline = _blob_outline(rng, start, rng.uniform(12, 70) * scale)
            render_outline = outline
            texture = 0.55 + 0.45 * _smooth_noise(rng, w, h, cells=60)
            alpha = _fill(outline, w, h, blur=1.5 * scale + 0.5) * texture
        else:
            length = math.exp(rng.uniform(math.log(30), math.log(600))) * scale
            n_points = max(8, int(length / 4))
            points = _curve_points(rng, start, length, n_points, bend=rng.uniform(0, 0.35))
            t = np.linspace(0, 1, n_points)
            taper = np.clip(np.sin(np.pi * t) ** 0.35, 0.35, 1)
            wiggle = 1 + 0.3 * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * t + rng.uniform()))
            half = rng.uniform(0.7, 3.2) * max(scale, 0.5) * taper * wiggle
            render_outline = _stroke_outline(points, half)
            # Annotators trace a little outside the visible stroke.
            outline = _stroke_outline(points, half + 0.8 * max(scale, 0.5))
            fade = np.clip(0.3 + 1.0 * _smooth_noise(rng, w, h, cells=int(
                rng.integers(8, 40))), 0.35, 1.0)
            alpha = _fill(render_outline, w, h, blur=0.6 * max(scale, 0.5)) * fade
        if visible:
            colour, contrast = _visible_tone(image, alpha, colour, contrast)
        _blend(image, alpha * contrast, colour)
        flat = _flat_polygon(outline, w, h)
        area, bbox = _polygon_area_bbox(flat)
        annotations.append({"id": len(annotations) + 1, "bbox": bbox, "area": area,
                            "segmentation": flat,
                            "attributes": {"quality": QUALITY_DEFECTIVE}})
    return annotations


def _panel_label(panel_region: np.ndarray, w: int, h: int) -> list[dict]:
    """A good part's label: the inspected panel's box, quality 양품."""
    ys, xs = np.nonzero(panel_region > 0.5)
    x0, x1 = (int(xs.min()), int(xs.max())) if xs.size else (0, w - 1)
    y0, y1 = (int(ys.min()), int(ys.max())) if ys.size else (0, h - 1)
    flat = [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
    area, bbox = _polygon_area_bbox(flat)
    return [{"id": 1, "bbox": bbox, "area": area, "segmentation": flat,
             "attributes": {"quality": QUALITY_GOOD}}]


def _camera(rng, image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Slight vignetting and sensor noise, then 8-bit RGB."""
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    image *= (1 - 0.08 * (xx ** 2 + yy ** 2))[..., None]
    image += rng.standard_normal((h, w, 1), dtype=np.float32) * 0.008
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    return pixels


def _write_part(args: tuple[PartSpec, str, int]) -> bool:
    spec, out, quality = args
    out_dir = Path(out)
    image_path = out_dir / "images" / f"{spec.stem}.jpg"
    label_path = out_dir / "labels" / f"{spec.stem}.json"
    if image_path.exists() and label_path.exists():
        # Already written (generation is deterministic): read the verdict, skip the rendering.
        label = json.loads(label_path.read_text(encoding="utf-8-sig"))
        return any(a.get("attributes", {}).get("quality") == QUALITY_DEFECTIVE
                   for a in label.get("annotations", []))
    pixels, label, defective = render_part(spec)
    if not image_path.exists():
        import io  # stdlib
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, optimize=False)
        atomic_write_bytes(image_path, buffer.getvalue())
    if not label_path.exists():
        # AIHub labels are UTF-8 with a byte-order mark.
        atomic_write_json(label_path, label, encoding="utf-8-sig")
    return defective


SETTINGS_FILE = ".synthetic.json"   # hidden: sources skip it, so the folder stays an AIHub source


def _check_settings(out: Path, settings: dict) -> None:
    """Reuse a folder's parts only if they were generated with these settings (a folder from before
    the settings were written holds parts drawn without ``visible``); then record them."""
    path = out / SETTINGS_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
    elif any((out / "images").iterdir()):
        found = {**settings, "visible": False}
    else:
        found = settings
    differ = {key: (found.get(key), value) for key, value in settings.items() if found.get(key) != value}
    if differ:
        said = ", ".join(f"{key} {old!r} there, {new!r} asked" for key, (old, new) in differ.items())
        raise ValueError(f"{out} holds parts generated with other settings ({said}): generate into another "
                         "folder, or delete that one to start again")
    if not path.is_file():
        atomic_write_json(path, settings)


def generate(out: str | os.PathLike, count: int = 600, seed: int = 0, width: int = 1280,
             height: int = 720, workers: int | None = None, quality: int = 92,
             progress: bool = True, good_fraction: float = GOOD_FRACTION, visible: bool = False) -> dict:
    """Write ``count`` synthetic parts to ``out/images/*.jpg`` and ``out/labels/*.json``.

    Existing files are kept (generation is deterministic, so they are the same parts):
    a re-run only fills in what is missing. With ``visible``, no defect is drawn under
    :data:`VISIBLE_LEVELS` from its paint (the same parts otherwise: write them to another
    folder). Returns a summary dict.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    if width < 64 or height < 64:
        raise ValueError("width and height must be at least 64 pixels")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if not 0 <= good_fraction <= 1:
        raise ValueError(f"good_fraction must be between 0 and 1, got {good_fraction}")
    _check_settings(out, {"seed": seed, "width": width, "height": height, "good_fraction": good_fraction,
                          "visible": visible, "quality": quality})
    specs = [(PartSpec(i, seed, width, height, good_fraction, visible), str(out), quality) for i in range(count)]
    defective = sum(parallel_map(_write_part, specs, workers, desc="synthesising parts", unit="part",
                                 progress=progress, min_tasks=2, chunksize=8))
    summary = {"out": str(out), "count": count, "defective": defective,
               "good": count - defective, "seed": seed, "width": width, "height": height}
    return summary
