"""Errors the CLI turns into a one-line message and exit code 2 (light to import)."""


class WeightsUnavailable(RuntimeError):
    """Pretrained encoder weights cannot be had here (offline, or the extra not installed)."""
