"""Resource limits shared by ``prepare``, ``predict`` and the app (no heavy imports: the CLI reads them)."""
from __future__ import annotations

from .errors import PhotoTooLarge

# Pixel budget per photo, checked from the header before any pixel is decoded: inspection
# photos are 2-24 MP; a 168 KB PNG can declare 150 MP and hold a CPU for half a minute.
DEFAULT_MAX_MEGAPIXELS = 40.0
# How long an upload may queue for the model before the app answers 503 with Retry-After.
DEFAULT_MAX_WAIT_S = 10.0


def check_pixel_budget(size: tuple[int, int], max_megapixels: float | None) -> None:
    """PhotoTooLarge when ``size`` = (width, height) is over ``max_megapixels`` (None: no limit)."""
    width, height = size
    if max_megapixels is not None and width * height > max_megapixels * 1e6:
        raise PhotoTooLarge(width, height, max_megapixels)
