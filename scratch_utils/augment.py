"""Joint image + mask augmentation with Keras 3 preprocessing layers (notebook 02).

Every geometric layer is called on ``{"images": ..., "segmentation_masks": ...}`` so the
photo and its mask move together; colour layers change the photo only. The earlier projects' set
(horizontal flip, +-5% shift, hue) is the default; each transform and its strength is a
field of :class:`AugmentConfig`.

Interpolation defaults to ``"nearest"`` for the photo too: Keras always resamples masks
with nearest, and a bilinear photo would then disagree with its mask by up to a pixel at
every edge (for a 2-pixel scratch, that is half the scratch). Nearest also keeps a thin
scratch's contrast instead of blurring it away. ``"bilinear"`` is available.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import keras


@dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = True   # scratches have no preferred direction
    vertical_flip: bool = False
    shift: float = 0.05            # fraction of height/width (the earlier projects' translate)
    rotation: float = 0.0          # fraction of a full turn: 0.03 is about +-11 degrees
    zoom: float = 0.0              # fraction: 0.1 zooms in or out by up to 10%
    hue: float = 0.05              # Keras RandomHue factor (0: none, 1: strongest)
    brightness: float = 0.0        # Keras RandomBrightness factor (share of the range)
    contrast: float = 0.0          # Keras RandomContrast factor
    interpolation: str = "nearest"
    fill_mode: str = "reflect"     # paint continues past the border; masks are moved alike

    @classmethod
    def tiles(cls) -> "AugmentConfig":
        """For training tiles: flips both ways (a crop is already a random shift) and a
        little colour: the same scratch on another paint, under other lights."""
        return cls(vertical_flip=True, shift=0.0, hue=0.05, brightness=0.1, contrast=0.1)

    @classmethod
    def strong(cls) -> "AugmentConfig":
        """Every transform on: for small sets and photos from several cameras."""
        return cls(vertical_flip=True, rotation=0.03, zoom=0.1, hue=0.08, brightness=0.15,
                   contrast=0.2)

    def geometric_only(self) -> "AugmentConfig":
        return replace(self, hue=0.0, brightness=0.0, contrast=0.0)


class JointAugment:
    """Callable ``(images, masks) -> (images, masks)`` on batches, in [0, 1] and {0, 1}.

    Built once per pipeline from a config and a seed, so a pipeline built twice with
    the same seed draws the same transforms.
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0):
        self.config = config or AugmentConfig()
        c, layers = self.config, keras.layers
        if c.interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {c.interpolation!r}")
        for name in ("shift", "rotation", "zoom", "hue", "brightness", "contrast"):
            value = getattr(c, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        geometric = dict(fill_mode=c.fill_mode, interpolation=c.interpolation)
        self.layers = []
        flip = {(True, True): "horizontal_and_vertical", (True, False): "horizontal",
                (False, True): "vertical"}.get((c.horizontal_flip, c.vertical_flip))
        if flip:
            self.layers.append(layers.RandomFlip(flip, seed=seed))
        if c.shift:
            self.layers.append(layers.RandomTranslation(c.shift, c.shift, seed=seed + 1, **geometric))
        if c.rotation:
            self.layers.append(layers.RandomRotation(c.rotation, seed=seed + 2, **geometric))
        if c.zoom:
            self.layers.append(layers.RandomZoom(c.zoom, c.zoom, seed=seed + 3, **geometric))
        if c.hue:
            self.layers.append(layers.RandomHue(c.hue, value_range=(0, 1), seed=seed + 4))
        if c.brightness:
            self.layers.append(layers.RandomBrightness(c.brightness, value_range=(0, 1),
                                                       seed=seed + 5))
        if c.contrast:
            self.layers.append(layers.RandomContrast(c.contrast, value_range=(0, 1),
                                                     seed=seed + 6))

    def __call__(self, images, masks):
        batch = {"images": images, "segmentation_masks": masks}
        for layer in self.layers:
            batch = layer(batch, training=True)
        images = keras.ops.clip(batch["images"], 0.0, 1.0)
        # Nearest resampling keeps masks binary already; the threshold guarantees it.
        masks = keras.ops.cast(batch["segmentation_masks"] > 0.5, "float32")
        return images, masks

    def describe(self) -> list[str]:
        """The Keras layers this augmenter applies, in order."""
        return [type(layer).__name__ for layer in self.layers]
