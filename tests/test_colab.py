"""Each notebook the way Colab runs it, under nbval: the package built as a wheel and installed
into a fresh virtual environment outside the checkout, the notebook copied alone into an empty
folder and executed by ``pytest --nbval-lax`` in the smoke profile (cells tagged
``nbval-check-output`` must print what the committed notebook shows); its data goes where a pip
install puts it (``~/scratch_data``), never into the checkout. This is the one run of each
notebook in ``make test``.

Colab comes with TensorFlow, Keras, NumPy, Pillow, matplotlib and Jupyter installed; the
fresh environment gets the same by seeing this environment's packages (a ``.pth`` line: not
the editable install of the checkout, whose hook only runs from a site directory), so what is
tested is our wheel and our notebooks, not a 600 MB TensorFlow download.
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NBVAL = ["-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900",
         "-p", "no:cacheprovider", "-q", "-o", "addopts="]


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[:4]}...\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def colab_python(tmp_path_factory) -> Path:
    """A fresh virtual environment with our wheel installed, outside the checkout."""
    root = tmp_path_factory.mktemp("colab")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"), str(ROOT)])
    (wheel,) = (root / "dist").glob("scratch_utils-*.whl")
    run([sys.executable, "-m", "venv", str(root / "venv")])
    python = root / "venv" / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(purelib) / "colab_preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)])
    where = run([str(python), "-c", "import scratch_utils; print(scratch_utils.__file__)"],
                cwd=root).stdout.strip()
    assert where.startswith(str(root / "venv")), f"imported from {where}, not from the installed wheel"
    assert (Path(where).parent / "templates" / "page.html").is_file(), "the app's page is in the wheel"
    return python


def data_files() -> set:
    return {p for p in (ROOT / "data").rglob("*")} if (ROOT / "data").exists() else set()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_alone_from_the_installed_package(colab_python, notebook, tmp_path):
    folder, home = tmp_path / "content", tmp_path / "home"
    folder.mkdir()
    home.mkdir()
    (folder / notebook.name).write_bytes(notebook.read_bytes())
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SCRATCH_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), SCRATCH_PROFILE="smoke", TF_CPP_MIN_LOG_LEVEL="3",
               MPLBACKEND="agg", PATH=f"{colab_python.parent}:{env.get('PATH', '')}")
    before = data_files()
    result = run([str(colab_python), *NBVAL, notebook.name], cwd=folder, env=env, timeout=1500)
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout[-2000:]
    assert data_files() == before, "the notebook wrote into the checkout"
    assert (home / "scratch_data" / "smoke").is_dir(), "data goes where a pip install puts it"
    assert sorted(p.name for p in folder.iterdir()) == [notebook.name], "nothing but the notebook here"
