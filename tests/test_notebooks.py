"""The notebooks as a student meets them: one data setting, three source formats, clean
rendered outputs, install cells and Colab badges in sync with the repository address."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_install_cells_and_badges_derive_from_the_one_repository_address(tmp_path):
    from scratch_utils.notebooks import SETTINGS_CELL, colab_badge, package_version, repository_url, sync_links
    url = repository_url(ROOT)
    assert url.startswith("https://github.com/") and "YOUR-ORG" not in url
    for path in NOTEBOOKS:
        first_code = next(c for c in cells(path) if c["cell_type"] == "code")
        assert source(first_code) == SETTINGS_CELL.format(url=url, version=package_version(ROOT))
        assert f"@v{package_version(ROOT)}" in source(first_code), "the install is pinned to the version's tag"
        assert colab_badge(path.name, url) in source(cells(path)[0])
    assert colab_badge("01_data_preparation.ipynb", url) in (ROOT / "README.md").read_text()
    # In sync: rewriting them from the address changes nothing.
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", copy / "notebooks")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    assert sync_links(copy) == []


def test_every_notebook_reads_the_one_settings_cell_first_and_its_edits_take_effect():
    """The settings cell assigns each setting as a literal a student edits; it never writes the
    profile into the environment (where a first run's value would outlive the edit), and later
    cells never set them again."""
    for path in NOTEBOOKS:
        code = [source(c) for c in cells(path) if c["cell_type"] == "code"]
        for name in ("PROFILE_NAME", "DATA_SOURCE", "USE_GOOGLE_DRIVE", "ENCODER_WEIGHTS"):
            assert re.search(rf"^{name} = ", code[0], re.M), (path.name, name)
            assert not any(re.search(rf"^{name}\s*=", c, re.M) for c in code[1:]), (path.name, name)
        assert 'os.environ["SCRATCH_PROFILE"] =' not in code[0]
        assert "get_profile(PROFILE_NAME)" in "\n".join(code[1:]) or path.name.startswith("00"), path.name
        later = "\n".join(code[1:])
        for call in re.findall(r"ensure_prepared\([^)]*\)", later):
            assert "source=DATA_SOURCE" in call, f"{path.name}: {call}"


MACHINE_PATH = re.compile(r"(/work/|/tmp/|/home/|/root/|/Users/|site-packages|\.venv|[A-Z]:\\)")
KNOWN_COLUMNS = ("detection_rate", "false_alarm_rate", "tolerance_f1", "train_tiles_per_s",
                 "inference_ms_per_photo", "defect_share", "source_image", "label_file")


def outputs_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        for kind, value in output.get("data", {}).items():
            if kind.startswith("text/"):
                parts.append("".join(value))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_rendered_notebook_is_clean_and_self_contained(path):
    texts = [source(c) for c in cells(path)] + [outputs_text(c) for c in cells(path)]
    text = "\n".join(texts)
    rendered = "\n".join(outputs_text(c) for c in cells(path))
    assert not MACHINE_PATH.search(rendered), MACHINE_PATH.search(rendered).group(0)
    assert "PosixPath(" not in rendered and "WindowsPath(" not in rendered
    stderr = [o for c in cells(path) for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert stderr == [], "".join(stderr[0]["text"])[:300]
    for word in re.findall(r"\b[a-z]+_[a-z_]*\b", rendered):
        cut = [k for k in KNOWN_COLUMNS if k != word and k.startswith(word) and len(word) >= 6]
        assert not cut, f"a header cut short: {word!r} (of {cut[0]!r})"
    assert not re.search(r"seed 00\d|\bissue \d", text, re.I), "say what the earlier projects were"
    assert "YOUR-ORG" not in text


def write_coco_and_pairs(aihub: Path, root: Path) -> dict:
    """The same parts as a COCO export and as images/ + masks/ folders."""
    from scratch_utils.masks import source_mask
    from scratch_utils.sources import discover
    fmt, _, items, _ = discover(aihub)
    assert fmt == "aihub"
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "scratch"}]}
    for k, item in enumerate(items, start=1):
        name = Path(item.image).name
        width, height = Image.open(item.image).size
        for folder in (root / "coco" / "images", root / "pairs" / "images"):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(item.image, folder / name)
        coco["images"].append({"id": k, "file_name": f"images/{name}", "width": width, "height": height})
        for polys in item.polygons:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k,
                                        "category_id": 1, "segmentation": polys, "iscrowd": 0})
        mask = source_mask(item)
        (root / "pairs" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "pairs" / "masks" / f"{Path(name).stem}.png")
    (root / "coco" / "annotations.json").write_text(json.dumps(coco))
    return {"aihub": aihub, "coco": root / "coco", "pairs": root / "pairs"}


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    from scratch_utils.synthetic import generate
    root = tmp_path_factory.mktemp("formats")
    generate(root / "aihub", count=16, seed=2, width=320, height=180, workers=1, progress=False)
    return write_coco_and_pairs(root / "aihub", root)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["coco", "pairs"])   # aihub: the synthetic set, run by test_colab
def test_notebook_01_runs_on_each_source_format(three_formats, fmt, tmp_path, monkeypatch):
    from scratch_utils.notebooks import execute
    monkeypatch.setenv("SCRATCH_DATA_SOURCE", str(three_formats[fmt]))
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SCRATCH_FIGURES_DIR", str(tmp_path / "figures"))
    notebook = tmp_path / "01_data_preparation.ipynb"
    shutil.copy(ROOT / "notebooks" / notebook.name, notebook)
    nb = execute(notebook, "smoke", timeout=600)
    printed = "\n".join(outputs_text(c) for c in nb.cells)
    assert f"format: {fmt}" in printed
    assert re.search(r"-> 16 parts: \d+ defective, \d+ good; 0 skipped", printed), printed[:2000]
    prepared = tmp_path / "data" / "smoke" / f"prepared-{three_formats[fmt].name}-scaled"
    assert len(list((prepared / "masks").glob("*.png"))) == 16
    assert (tmp_path / "figures" / "01_scratch_at_three_resolutions.png").is_file()


def test_a_settings_edit_takes_effect_on_the_second_run():
    """What a student does in Colab: run the settings cell, change the profile, run it again."""
    import os

    from scratch_utils.notebooks import SETTINGS_CELL
    cell = SETTINGS_CELL.format(url="https://example.org/repo", version="0")
    saved = {k: os.environ.pop(k) for k in ("SCRATCH_PROFILE", "SCRATCH_DATA_SOURCE", "SCRATCH_ENCODER_WEIGHTS")
             if k in os.environ}
    try:
        namespace = {}
        exec(cell, namespace)
        assert namespace["PROFILE_NAME"] == "default"
        exec(cell.replace('PROFILE_NAME = "default"', 'PROFILE_NAME = "smoke"', 1), namespace)
        assert namespace["PROFILE_NAME"] == "smoke"
    finally:
        os.environ.update(saved)


def test_notebook_03_builds_the_packages_model_and_loss_in_its_own_cells():
    """The cells a student reads define the U-Net and the loss; executed alone, they build exactly
    scratch_utils.models.unet / encoder_decoder and compute scratch_utils.losses' BCE + Dice; the
    notebook compiles and fits a model in a cell of its own."""
    keras = pytest.importorskip("keras")
    from scratch_utils import losses, models
    code = [source(c) for c in cells(ROOT / "notebooks" / "03_train_unet.ipynb") if c["cell_type"] == "code"]
    defining = next(c for c in code if "def build_unet" in c and "def conv_block" in c)
    loss_cell = next(c for c in code if "def bce_dice" in c)
    assert any("model.compile(" in c and "model.fit(" in c for c in code)
    assert "layers.Concatenate(" in defining and "layers.Conv2DTranspose(" in defining
    namespace = {"keras": keras, "layers": keras.layers, "ops": keras.ops, "np": np, "losses": losses,
                 "RECIPE": type("R", (), {"base_filters": 4})}
    exec(defining.split("\nunet = build_unet")[0], namespace)
    exec(loss_cell, namespace)
    for skips, builder in ((True, models.unet), (False, models.encoder_decoder)):
        assert models.same_architecture(namespace["build_unet"](4, skips=skips), builder(None, 4)) == []
    y_true = (np.random.default_rng(1).random((2, 16, 16, 1)) < 0.05).astype("float32")
    y_pred = np.random.default_rng(2).random((2, 16, 16, 1)).astype("float32")
    assert float(namespace["bce_dice"](y_true, y_pred)) == pytest.approx(
        float(losses.get_loss("bce_dice")(y_true, y_pred)), abs=1e-6)
