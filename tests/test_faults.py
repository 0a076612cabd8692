"""Output errors are not input errors: a full disk or a read-only folder stops prepare, train,
predict and synth at once with one line (exit code 1, no traceback), leaves nothing that looks
complete, and the next run finishes the job. On a real small filesystem (a tmpfs, as root) where
the platform allows it, with a patched write otherwise."""
import contextlib
import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from scratch_utils import cli
from scratch_utils.dataset import Prepared


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and Path("/proc/mounts").is_file()


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: float):
    """A tmpfs of ``megabytes`` mounted on ``folder`` (skips the test where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(megabytes * 1024)}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """120 synthetic parts of 640x360: prepared at half scale they take about 10 MB."""
    from scratch_utils.synthetic import generate
    root = tmp_path_factory.mktemp("faults") / "source"
    generate(root, count=120, seed=3, width=640, height=360, workers=2, progress=False)
    return root


def one_line_error(capsys) -> str:
    """The one error line (progress bars aside), with no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs")
def test_prepare_on_a_disk_that_fills_part_way_stops_with_one_line_and_finishes_on_the_next_run(
        photos, tmp_path, capsys):
    disk = tmp_path / "disk"
    with small_disk(disk, 4):
        code = cli.main(["prepare", str(photos), "--out", str(disk / "prepared"), "--scale", "0.5"])
        line = one_line_error(capsys)
        assert code == 1
        assert "No space left on device" in line and "MB needed" in line and "MB free on that disk" in line
        assert not (disk / "prepared" / "manifest.csv").exists() or (disk / "prepared" / ".prepare_incomplete").exists()
        with pytest.raises(FileNotFoundError, match="not fully prepared"):
            Prepared.open(disk / "prepared")
        remount(disk, "size=64m")
        assert cli.main(["prepare", str(photos), "--out", str(disk / "prepared"), "--scale", "0.5"]) == 0
        prepared = Prepared.open(disk / "prepared")
        assert len(prepared.rows) == 120, "nothing was skipped for the disk's fault"
        assert "skipped 0" in capsys.readouterr().out


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs")
def test_prepare_on_a_full_disk_says_the_disk_is_full(photos, tmp_path, capsys):
    disk = tmp_path / "disk"
    with small_disk(disk, 0.1):
        (disk / "filler").write_bytes(os.urandom(1))
        with contextlib.suppress(OSError):
            (disk / "filler").write_bytes(os.urandom(200_000))
        assert cli.main(["prepare", str(photos), "--out", str(disk / "prepared")]) == 1
        line = one_line_error(capsys)
        assert "No space left on device" in line and "nothing" not in line


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a read-only tmpfs")
def test_a_read_only_output_folder_is_one_line(photos, tmp_path, capsys):
    disk = tmp_path / "disk"
    with small_disk(disk, 8):
        remount(disk, "ro")
        assert cli.main(["prepare", str(photos), "--out", str(disk / "prepared")]) == 1
        assert "Read-only file system" in one_line_error(capsys)
        assert cli.main(["synth", "--out", str(disk / "synthetic"), "--count", "4"]) == 1
        assert "Read-only file system" in one_line_error(capsys)


def test_a_failed_write_stops_prepare_where_no_tmpfs_can_be_mounted(photos, tmp_path, capsys, monkeypatch):
    """The same contract with the write patched: one line, exit 1, nothing skipped, the folder
    marked incomplete until a later run finishes it."""
    import scratch_utils.files as files
    real_fdopen, calls = os.fdopen, {"n": 0}

    def full_after_20(fd, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(files.os, "fdopen", full_after_20)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", str(photos), "--out", str(out), "--scale", "0.5", "--workers", "1"]) == 1
    assert "No space left on device" in one_line_error(capsys)
    with pytest.raises(FileNotFoundError, match="not fully prepared"):
        Prepared.open(out)
    monkeypatch.setattr(files.os, "fdopen", real_fdopen)
    assert cli.main(["prepare", str(photos), "--out", str(out), "--scale", "0.5", "--workers", "1"]) == 0
    assert len(Prepared.open(out).rows) == 120


@pytest.mark.slow
@pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs")
def test_train_and_predict_on_a_full_disk_stop_with_one_line(prepared, run, tmp_path, capsys):
    disk = tmp_path / "disk"
    with small_disk(disk, 0.3):
        code = cli.main(["train", "--data", str(prepared), "--model", "unet", "--out", str(disk / "run"),
                         "--profile", "smoke", "--epochs", "1", "--base-filters", "4", "--tile-size", "32"])
        line = one_line_error(capsys)
        assert code == 1 and "No space left" in line, line
        assert not (disk / "run").exists(), "no run folder looks finished"
        photo = sorted((Prepared.open(prepared).source / "images").glob("*.jpg"))[0]
        for leftover in disk.iterdir():
            subprocess.run(["rm", "-rf", str(leftover)], check=True)
        filler = disk / f"filler-{uuid.uuid4().hex}"
        with contextlib.suppress(OSError):
            filler.write_bytes(os.urandom(400_000))
        assert cli.main(["predict", "--model", str(run), "--input", str(photo), "--out", str(disk / "masks")]) == 1
        assert "No space left on device" in one_line_error(capsys)


@pytest.mark.slow
def test_the_report_stops_with_one_line_when_a_notebook_cannot_write(tmp_path, capsys):
    """A notebook whose cell meets a full disk stops the report; the notebook is not written back."""
    import nbformat

    from scratch_utils.errors import OutputError
    from scratch_utils.report import run_all
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "raise OSError(28, 'No space left on device', '/data/runs/unet/model.keras')")])
    path = tmp_path / "01_full_disk.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"01_full_disk.ipynb stopped: .*No space left on device"):
        run_all(profile="smoke", folder=tmp_path)
    assert path.read_bytes() == before, "a notebook that failed is not written back"


@pytest.mark.slow
def test_a_smoke_report_never_replaces_the_rendered_notebooks(tmp_path, monkeypatch):
    """Only a published profile's render is written over the notebooks; a smoke render goes beside
    the smoke data."""
    import nbformat

    from scratch_utils.report import run_all
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "data"))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    path = notebooks / "01_hello.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('rendered')")]), path)
    before = path.read_bytes()
    run_all(profile="smoke", folder=notebooks)
    assert path.read_bytes() == before, "the committed notebook is untouched"
    rendered = nbformat.read(tmp_path / "data" / "smoke" / "notebooks" / "01_hello.ipynb", as_version=4)
    assert "rendered" in rendered.cells[0].outputs[0]["text"]
