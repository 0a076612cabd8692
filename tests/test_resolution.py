"""Hairline scratches: preparation keeps resolution, tiles for training, whole photos for prediction."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from scratch_utils.preparation import prepare
from scratch_utils.dataset import Prepared
from scratch_utils.geometry import Geometry, pick_scale

from conftest import defect, write_aihub_label, write_photo

tf = pytest.importorskip("tensorflow")


def line_polygon(x0, y0, x1, y1, width):
    """A straight stroke ``width`` px wide as a polygon."""
    direction = np.array([x1 - x0, y1 - y0], float)
    normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction) * width / 2
    corners = [np.array([x0, y0]) + normal, np.array([x1, y1]) + normal,
               np.array([x1, y1]) - normal, np.array([x0, y0]) - normal]
    return [round(float(v), 2) for point in corners for v in point]


# --------------------------------------------------------------------- preparation

def test_a_one_pixel_line_on_a_2048_px_photo_survives_half_scale(tmp_path):
    root = tmp_path / "src"
    write_photo(root / "a.jpg", width=2048, height=1152)
    write_aihub_label(root / "a.json", "a.jpg", 2048, 1152,
                      [defect(line_polygon(100, 200, 1900, 900, width=1.0))])
    report = prepare(root, tmp_path / "out", scale=0.5, progress=False)
    assert report["settings"]["scale"] == 0.5
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")) > 0
    assert mask.shape == (576, 1024), "aspect ratio kept, half the resolution"
    columns = np.flatnonzero(mask.any(axis=0))
    assert columns.min() <= 51 and columns.max() >= 949
    assert len(columns) == columns.max() - columns.min() + 1, "the line has no gap"
    assert mask.sum() < 3 * len(columns), "and stays a thin line"


@pytest.mark.parametrize("width, expected", [(1.5, 1.0), (3.0, 0.5), (6.0, 0.25), (12.0, 0.125)])
def test_auto_scale_keeps_the_narrowest_defect_about_a_pixel_wide(tmp_path, width, expected):
    root = tmp_path / "src"
    for k in range(4):
        write_photo(root / f"p{k}.png", width=400, height=300)
        write_aihub_label(root / f"p{k}.json", f"p{k}.png", 400, 300,
                          [defect(line_polygon(20, 20 + 50 * k, 380, 40 + 50 * k, width))])
    report = prepare(root, tmp_path / "out", progress=False)
    estimate = report["settings"]["scale_estimate"]
    assert estimate["narrowest_defect_px"] == pytest.approx(width, rel=0.05)
    assert report["settings"]["scale"] == expected == pick_scale(width)
    assert Image.open(tmp_path / "out" / "images" / "p0.png").size == (round(400 * expected),
                                                                      round(300 * expected))


def scratch_masks(folder: Path, widths, speck_at=None, fringe: bool = False, count: int = 8) -> Path:
    """A paired folder of ``count`` 320x240 photos, each mask one straight scratch of the next width
    of ``widths``; ``speck_at`` adds one 1-px speck to that photo's mask, ``fringe`` draws every
    scratch anti-aliased and binarises it at > 0 (a 1-px fringe), with a few 1-px specks of fringe."""
    from PIL import ImageDraw
    rng = np.random.default_rng(5)
    (folder / "masks").mkdir(parents=True)
    for k in range(count):
        width = widths[k % len(widths)]
        polygon = line_polygon(30, 40 + 20 * k, 290, 60 + 18 * k, width)
        canvas = Image.new("L", (320 * 4, 240 * 4))    # drawn 4x finer, then area-averaged: anti-aliased
        ImageDraw.Draw(canvas).polygon([(4 * x, 4 * y) for x, y in zip(polygon[::2], polygon[1::2])], fill=255)
        values = np.asarray(canvas.resize((320, 240), Image.Resampling.BOX))
        mask = (values > 0) if fringe else (values > 127)
        if fringe:
            for y, x in zip(rng.integers(0, 240, 6), rng.integers(0, 320, 6)):
                mask[y, x] = True
        if k == speck_at:
            mask[230, 10] = True
        write_photo(folder / "images" / f"p{k}.png", 320, 240)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"p{k}.png")
    return folder


def test_one_speck_among_scratches_leaves_the_automatic_scale_unchanged(tmp_path):
    """The scale reads the width below which lies 5% of the defects' length: a 1-px speck is one
    pixel of length among hundreds (the 5th percentile of the widths themselves would read it)."""
    from scratch_utils.preparation import estimate_scale
    from scratch_utils.sources import discover
    widths = (2.0, 3.0, 4.0, 6.0)
    clean = estimate_scale(discover(scratch_masks(tmp_path / "clean", widths))[2])
    speck = estimate_scale(discover(scratch_masks(tmp_path / "speck", widths, speck_at=3))[2])
    assert clean["scale"] == speck["scale"] == 0.5, (clean, speck)
    assert speck["defects_measured"] == clean["defects_measured"] + 1 and speck["specks_measured"] == 1
    assert abs(speck["narrowest_defect_px"] - clean["narrowest_defect_px"]) < 0.05
    assert "5% of the defects' total length" in speck["statistic"]
    fringe = estimate_scale(discover(scratch_masks(tmp_path / "fringe", widths, fringe=True))[2])
    assert fringe["scale"] == clean["scale"], "a 1-px fringe and its specks do not move the scale either"
    assert fringe["specks_measured"] >= 40


def test_max_side_caps_the_longer_side_and_keeps_the_aspect_ratio(tmp_path):
    root = tmp_path / "src"
    write_photo(root / "wide.png", width=1000, height=500)
    write_photo(root / "tall.png", width=300, height=900)
    for name, (w, h) in (("wide", (1000, 500)), ("tall", (300, 900))):
        write_aihub_label(root / f"{name}.json", f"{name}.png", w, h,
                          [defect([10, 10, 60, 10, 60, 40, 10, 40])])
    prepare(root, tmp_path / "out", scale=1.0, max_side=400, progress=False)
    assert Image.open(tmp_path / "out" / "images" / "wide.png").size == (400, 200)
    assert Image.open(tmp_path / "out" / "masks" / "tall.png").size == (133, 400)
    assert Geometry(scale=0.5, max_side=400).layout(1000, 500).box_w == 400
    with pytest.raises(ValueError, match="fraction"):
        Geometry(scale=2)


def test_extent_gives_each_photo_the_same_pixels_with_its_aspect_kept(tmp_path):
    root = tmp_path / "src"
    for name, (w, h) in (("wide", (1000, 500)), ("tall", (300, 900))):
        write_photo(root / f"{name}.png", width=w, height=h)
        write_aihub_label(root / f"{name}.json", f"{name}.png", w, h, [defect([10, 10, 60, 10, 60, 40, 10, 40])])
    report = prepare(root, tmp_path / "out", extent=128, progress=False)
    assert report["settings"]["extent"] == 128 and report["settings"]["scale"] is None
    for name, (w, h) in (("wide", (1000, 500)), ("tall", (300, 900))):
        image = Image.open(tmp_path / "out" / "images" / f"{name}.png")
        width, height = image.size
        assert abs(width * height - 128 * 128) < 2 * (width + height), (name, image.size)
        assert abs(width / height - w / h) < 0.02, "no axis is stretched more than the other"
        assert Image.open(tmp_path / "out" / "masks" / f"{name}.png").size == image.size
    prepared = Prepared.open(tmp_path / "out")
    assert prepared.geometry == Geometry(extent=128), "the run reads back the geometry predict will use"
    for bad in (dict(extent=128, scale=0.5), dict(extent=128, size=128), dict(extent=8)):
        with pytest.raises(ValueError, match="extent"):
            Geometry(**bad)


# --------------------------------------------------------------------- tiles

@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_the_tile_sampler_centres_its_share_of_tiles_on_defects(scaled, share):
    from scratch_utils.pipeline import sample_tiles
    tiles = sample_tiles(scaled, 400, tile_size=32, defect_share=share, seed=3)
    centred = np.mean([t["centred"] for t in tiles])
    assert abs(centred - share) < 0.06
    for tile in [t for t in tiles if t["centred"]][:40]:
        mask = np.asarray(Image.open(scaled / "masks" / f"{tile['stem']}.png")) > 0
        crop = mask[tile["y0"]:tile["y0"] + 32, tile["x0"]:tile["x0"] + 32]
        assert crop.shape == (32, 32) and crop.any(), "a centred tile shows its defect"


def test_the_tile_stream_is_reproducible_and_resumable(scaled):
    from scratch_utils.pipeline import make_tile_dataset

    def batches(seed, first_tile=0, n=3):
        dataset = make_tile_dataset(scaled, 32, 0.5, batch_size=4, seed=seed, first_tile=first_tile)
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]

    a, b, other = batches(0), batches(0), batches(1)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, other))
    resumed = batches(0, first_tile=8, n=1)[0]
    assert np.array_equal(resumed[0], a[2][0]), "tile k depends only on (seed, k)"
    images, masks = a[0]
    assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0} and 0 <= images.min() and images.max() <= 1


# --------------------------------------------------------------------- whole photos

@pytest.mark.slow
def test_whole_photo_prediction_equals_tile_stitched_prediction():
    from scratch_utils.models import unet, vgg16_unet
    from scratch_utils.predict import probability_map
    image = np.random.default_rng(0).random((500, 700, 3), dtype=np.float32)
    for model in (unet(None, base_filters=4, depth=4), vgg16_unet(None, encoder_weights=None,
                                                                  decoder_filters=(8, 8, 4, 4))):
        whole = probability_map(model, image)
        tiled = probability_map(model, image, max_pixels=1, core=256, margin=192)
        assert whole.shape == tiled.shape == (500, 700)
        assert np.abs(whole - tiled).max() < 1e-4, f"{model.name}: seams between tiles"


MEMORY_SCRIPT = """
import json, resource, sys
import keras
from scratch_utils.predict import Predictor, probability_map
run, photo_path, tiled = sys.argv[1], sys.argv[2], sys.argv[3] == "tiled"
# Wide at full resolution: 128 channels of float32 over a whole 3000x2000 input are 3 GB.
image = keras.Input((None, None, 3))
features = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(image)
model = keras.Model(image, keras.layers.Conv2D(1, 1, activation="sigmoid")(features))
predictor = Predictor(run, model=model)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
opened = predictor.open(photo_path)
if tiled:
    shape = list(predictor.predict_photo(opened).mask.shape)
else:
    x, _ = predictor.model_input(opened.model_photo, opened.size)
    shape = list(probability_map(model, x, max_pixels=10**12).shape)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mb": (peak - before) / 1024, "shape": shape}))
"""
MEMORY_BOUND_MB = 1500


@pytest.mark.slow
def test_a_very_large_photo_is_predicted_within_a_memory_bound(run, tmp_path):
    """A 6000x4000 phone photo at scale 0.5 is a 3000x2000 model input: tiles keep the peak
    memory under a bound that the same model on the whole input exceeds."""
    photo = tmp_path / "phone.jpg"
    small = np.random.default_rng(0).integers(60, 200, (400, 600, 3), dtype=np.uint8)
    Image.fromarray(small).resize((6000, 4000)).save(photo, quality=85)

    def grown(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(run), str(photo), mode],
                              capture_output=True, text=True,
                              env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    tiled, whole = grown("tiled"), grown("whole")
    assert tiled["shape"] == [4000, 6000], "the mask comes back at the photo's own size"
    assert whole["shape"] == [2000, 3000]
    assert tiled["grew_mb"] < MEMORY_BOUND_MB < whole["grew_mb"], (tiled, whole)


class RedChannelModel:
    """Stands in for a network: the defect probability is the red channel."""
    def predict_on_batch(self, batch):
        return np.asarray(batch)[..., :1]


def test_an_exif_rotated_photo_gets_a_mask_matching_the_displayed_photo(run, tmp_path):
    from scratch_utils.predict import Predictor
    displayed = np.zeros((120, 200, 3), np.uint8)
    displayed[:, :40, 0] = 255                       # red band on the left, as people see it
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)  # the camera's way
    exif = Image.Exif()
    exif[0x0112] = 6                                  # "rotate 90 clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (120, 200)
    predictor = Predictor(run, mask_threshold=0.5, decision_threshold=0.5, model=RedChannelModel())
    opened = predictor.open(path)
    assert opened.size == (200, 120) and opened.photo().size == (200, 120)
    mask = predictor.predict_photo(opened).mask
    assert mask.shape == (120, 200)
    assert mask[:, 5:35].mean() > 0.95 and mask[:, 60:].mean() < 0.01


def test_scores_use_the_masks_at_the_photos_own_resolution(scaled):
    """A model that paints exactly the prepared (coverage-dilated) masks is perfect at model
    resolution but not against the label polygons at the photo's own size."""
    from scratch_utils.evaluation import SplitPredictions, scores, sweep
    from scratch_utils.decision import OperatingPoint
    prepared = Prepared.open(scaled)
    rows = prepared.split("test")
    masks = [prepared.prepared_mask(r).astype(np.float16) for r in rows]
    predictions = sweep(SplitPredictions(prepared, rows, masks))
    truth = prepared.truths(rows[0]["stem"])
    assert truth.shape == (rows[0]["height"], rows[0]["width"])
    at_photo = scores(predictions, OperatingPoint(mask_threshold=0.5, decision_threshold=0.5, min_region=1))
    assert at_photo["detection_rate"] == 1.0 and at_photo["false_alarm_rate"] == 0.0
    assert 0.3 < at_photo["dice"] < 0.95, "thin scratches drawn a pixel wide at half scale"
    assert at_photo["recall"] > 0.9 and at_photo["tolerance_f1"] > at_photo["dice"]


# --------------------------------------------------------------------- runs and the app

def test_train_chooses_and_writes_the_operating_point_and_predict_uses_it(run, scaled, tmp_path):
    point = json.loads((run / "operating_point.json").read_text())
    assert point["chosen_on"] == "val" and 0 < point["decision_threshold"] < 1 and point["min_region"] >= 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["operating_point"] == point
    assert metrics["test"]["scored_at"] == "photo resolution"
    from scratch_utils.predict import Predictor, predict
    assert Predictor(run).point.as_dict() == point
    source = scaled.parent / "source" / "images"
    result = predict(run, source, tmp_path / "masks", progress=False)
    assert result["predicted"] == len(list(source.glob("*.jpg")))
    everything = predict(run, source, tmp_path / "all", decision_threshold=0.0, min_region=1, progress=False)
    assert everything["defective"] == everything["predicted"], "the overrides replace the run's values"


def test_the_app_imports_prediction_photos_and_runs_only():
    """The app's import path holds prediction, photos and run reading: no training, no figures
    (matplotlib), no profiles or generator, and no TensorFlow until the model is loaded."""
    code = ("import sys, scratch_utils.serve; print(sorted(m for m in sys.modules "
            "if m.startswith('scratch_utils.') or m.split('.')[0] in "
            "{'matplotlib', 'tensorflow', 'keras', 'sklearn', 'pycocotools'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    assert eval(done.stdout) == [f"scratch_utils.{m}" for m in
                                 ("decision", "errors", "files", "geometry", "limits", "metrics", "names",
                                  "photos", "predict", "runs", "serve")]


def test_the_predictions_train_keeps_match_a_fresh_prediction(run, scaled):
    from scratch_utils.evaluation import predict_split, run_predictions
    from scratch_utils.runs import load_run_model
    kept = run_predictions(run, "test")
    fresh = predict_split(load_run_model(run), scaled, "test")
    assert kept.prepared.folder == Path(scaled)
    assert [r["stem"] for r in kept.rows] == [r["stem"] for r in fresh.rows]
    for a, b in zip(kept.probabilities, fresh.probabilities):
        assert a.shape == b.shape and np.allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_the_auto_scale_agrees_for_mask_files_and_polygons_traced_from_them(tmp_path):
    """The same defects as mask files and as AIHub polygons traced around those masks (ragged,
    as a tracing tool leaves them) get the same width estimate and the same working scale."""
    from PIL import ImageDraw
    from skimage.measure import approximate_polygon, find_contours

    from scratch_utils.preparation import estimate_scale
    from scratch_utils.sources import discover
    rng = np.random.default_rng(3)
    pairs, aihub = tmp_path / "pairs", tmp_path / "aihub"
    for k in range(12):
        mask = np.zeros((240, 320), np.uint8)
        for _ in range(2):                               # 2-3 px wide scratches, at any angle
            x0, y0 = rng.uniform(20, 300), rng.uniform(20, 220)
            angle, length = rng.uniform(0, np.pi), rng.uniform(60, 200)
            x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
            polygon = line_polygon(x0, y0, np.clip(x1, 5, 315), np.clip(y1, 5, 235), rng.uniform(2, 3))
            canvas = Image.fromarray(mask)
            ImageDraw.Draw(canvas).polygon(list(zip(polygon[::2], polygon[1::2])), fill=1)
            mask = np.asarray(canvas)
        write_photo(pairs / "images" / f"p{k}.png", 320, 240)
        write_photo(aihub / f"p{k}.png", 320, 240)
        (pairs / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask * 255).save(pairs / "masks" / f"p{k}.png")
        traced = [approximate_polygon(c, tolerance=0.5)[:, ::-1].reshape(-1).round(2).tolist()
                  for c in find_contours(np.pad(mask, 1), 0.5)]
        write_aihub_label(aihub / f"p{k}.json", f"p{k}.png", 320, 240,
                          [defect([v - 1 for v in poly]) for poly in traced if len(poly) >= 6])
    estimates = {name: estimate_scale(discover(folder)[2]) for name, folder in (("pairs", pairs), ("aihub", aihub))}
    assert estimates["pairs"]["scale"] == estimates["aihub"]["scale"], estimates
    widths = [e["narrowest_defect_px"] for e in estimates.values()]
    assert abs(widths[0] - widths[1]) / max(widths) < 0.15, estimates
    assert 2 < min(widths) and max(widths) < 4, "about the drawn 2-3 px (PIL fills its edges: a pixel more)"
