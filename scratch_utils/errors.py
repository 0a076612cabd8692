"""Errors the CLI turns into a one-line message and exit code 2 (light to import)."""


class WeightsUnavailable(RuntimeError):
    """Pretrained encoder weights cannot be had here (offline, or the extra not installed)."""


class PrepareError(Exception):
    """SOURCE cannot be prepared at all (missing, unreadable, empty, nothing valid)."""


class ItemError(Exception):
    """One photo or label is bad: it is skipped with this message, the run goes on."""


class PhotoTooLarge(ItemError):
    """A photo whose header declares more pixels than the budget (nothing was decoded)."""

    def __init__(self, width: int | None, height: int | None, max_megapixels: float | None,
                 pixels: int | None = None):
        self.width, self.height, self.max_megapixels = width, height, max_megapixels
        self.pixels = pixels if pixels is not None else width * height
        size = f"{width}x{height} " if width and height else ""
        limit = (f"the {max_megapixels:g} MP limit (raise it with --max-megapixels)"
                 if max_megapixels is not None else "what Pillow opens safely")
        super().__init__(f"image is {size}({self.pixels / 1e6:.1f} MP), over {limit}")
