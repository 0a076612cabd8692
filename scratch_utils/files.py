"""Safe file writing (nothing is ever half-written, nothing outside the output folder) and
finding image files."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import output_error

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A crash or Ctrl-C leaves either the old file or the new one, never a torn file; a failed
    write (no space, read-only, no permission) raises :class:`~scratch_utils.errors.OutputError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path, len(data)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise output_error(exc, path, len(data)) from None
        raise


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, payload, encoding: str = "utf-8", indent: int | None = 1) -> None:
    separators = None if indent is not None else (",", ":")
    text = json.dumps(payload, ensure_ascii=False, indent=indent, separators=separators)
    atomic_write_text(path, text + "\n", encoding)


def is_within(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """True when ``child`` resolves to ``parent`` or a path below it."""
    child, parent = Path(child).resolve(), Path(parent).resolve()
    return child == parent or parent in child.parents


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files of a folder (or of its whole tree), sorted, hidden files left out."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))
