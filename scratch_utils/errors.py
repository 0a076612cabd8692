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


class OutputError(Exception):
    """An output could not be written (no space, a read-only folder, no permission): the run
    stops at once, since every later write would fail too. Not the input's fault: nothing is
    skipped for it. The CLI prints it as one line and exits with code 1."""

    def __init__(self, path, reason: str, needed: int | None = None, free: int | None = None):
        self.path, self.reason, self.needed, self.free = str(path), reason, needed, free
        text = f"cannot write {self.path}: {reason}"
        if free is not None:
            need = f"about {needed / 1e6:.1f} MB needed, " if needed else ""
            text += f" ({need}{free / 1e6:.1f} MB free on that disk)"
        super().__init__(text)

    def __reduce__(self):   # raised in a worker process, re-raised in the parent
        return type(self), (self.path, self.reason, self.needed, self.free)

    def needing(self, needed: int) -> "OutputError":
        """The same error, with what the whole job still needs in place of one file's size."""
        return OutputError(self.path, self.reason, needed, self.free)


def output_error(exc: OSError, path, needed: int | None = None) -> OutputError:
    """The :class:`OutputError` for an ``OSError`` met while writing ``path``; when the disk is
    full it says how much ``needed`` and how much is free there."""
    import errno
    import shutil
    from pathlib import Path
    free = None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        existing = Path(path).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            free = shutil.disk_usage(existing).free
        except OSError:
            free = None
    return OutputError(path, exc.strerror or str(exc), needed, free)
