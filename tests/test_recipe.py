"""The training recipe's pieces, each against a hand-computed answer: tile padding, the tile
sampler's class prior, group normalisation, the learning-rate schedules."""

import numpy as np
import pytest
from conftest import write_prepared_files
from PIL import Image

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from scratch_utils.pipeline import make_tile_dataset, reflect_indices, sample_tiles  # noqa: E402
from scratch_utils.predict import reflect_pad  # noqa: E402


def small_photo_set(root, width=40, height=24, n=6):
    """Photos smaller than a 32-px tile, each a gradient (every pixel distinct), one defect pixel."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for k in range(n):
        ys, xs = np.mgrid[0:height, 0:width]
        image = np.stack([xs * 6, ys * 10, np.full_like(xs, 40 * k)], axis=-1).astype(np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[height // 2, width // 2] = 255
        stem = f"p{k}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        rows.append({"stem": stem, "source_image": f"{stem}.jpg", "label_file": "", "quality": "defective",
                     "width": width, "height": height, "defect_share": 1 / mask.size, "n_defects": 1,
                     "split": "train" if k < 4 else "val"})
    return write_prepared_files(root, rows)


def test_reflect_indices_extend_an_axis_like_numpy_reflect():
    for size, length in ((3, 8), (5, 5), (1, 4), (2, 7)):
        expected = np.pad(np.arange(size), (0, length - size), mode="reflect" if size > 1 else "edge")
        assert reflect_indices(tf.constant(size), length).numpy().tolist() == expected.tolist()
    assert reflect_indices(tf.constant(3), 8).numpy().tolist() == [0, 1, 2, 1, 0, 1, 2, 1]


def test_training_tiles_of_a_photo_smaller_than_a_tile_are_padded_as_prediction_pads(tmp_path):
    prepared = small_photo_set(tmp_path)          # 40x24 photos, 32-px tiles: 8 rows short
    images, masks = next(iter(make_tile_dataset(prepared, 32, 0.0, batch_size=4, seed=0)))
    tiles = sample_tiles(prepared, 4, tile_size=32, defect_share=0.0, seed=0)
    for tile, image, mask in zip(tiles, images.numpy(), masks.numpy()):
        photo = np.asarray(Image.open(prepared / "images" / f"{tile['stem']}.png"))
        truth = np.asarray(Image.open(prepared / "masks" / f"{tile['stem']}.png"))[..., None]
        expected = reflect_pad(photo, 32, 40)[tile["y0"]:tile["y0"] + 32, tile["x0"]:tile["x0"] + 32]
        assert np.array_equal(np.round(image * 255).astype(np.uint8), expected)
        assert np.array_equal(mask > 0.5, reflect_pad(truth, 32, 40)[tile["y0"]:tile["y0"] + 32,
                                                                     tile["x0"]:tile["x0"] + 32] > 127)
        assert image[24:].max() > 0, "no black border: the reflected rows carry the photo"
    zeros, _ = next(iter(make_tile_dataset(prepared, 32, 0.0, batch_size=4, seed=0, padding="zeros")))
    assert zeros.numpy()[:, 24:].max() == 0.0, "the ablation's zero padding is kept as it was"


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_the_tile_samplers_class_prior_follows_its_setting(scaled, share):
    """The share of tiles showing a defect pixel grows with defect_share and is at least it."""
    tiles = sample_tiles(scaled, 300, tile_size=32, defect_share=share, seed=1)
    masks = {}
    showing = []
    for tile in tiles:
        if tile["stem"] not in masks:
            masks[tile["stem"]] = np.asarray(Image.open(scaled / "masks" / f"{tile['stem']}.png")) > 0
        crop = masks[tile["stem"]][tile["y0"]:tile["y0"] + 32, tile["x0"]:tile["x0"] + 32]
        showing.append(crop.any())
    centred = np.mean([t["centred"] for t in tiles])
    assert abs(centred - share) < 0.07
    assert np.mean(showing) >= centred - 1e-9


def test_group_norm_normalises_each_image_over_its_channel_groups():
    from scratch_utils.models import normalization_layer
    layer = normalization_layer("group", 8, "gn")            # 8 channels -> 4 groups of 2
    x = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 5, 8)).astype("float32")
    out = np.asarray(layer(x))
    grouped = x.reshape(2, 5, 5, 4, 2)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + layer.epsilon)).reshape(x.shape)
    assert np.allclose(out, expected, atol=1e-4)
    alone = np.asarray(layer(x[:1]))
    assert np.allclose(alone, out[:1], atol=1e-5), "an image's output does not depend on its batch"
    assert normalization_layer("group", 12, "g").groups == 4 and normalization_layer("group", 6, "g").groups == 3
    with pytest.raises(ValueError, match="normalization"):
        normalization_layer("layer", 8, "x")


def test_models_build_with_either_normalization():
    from scratch_utils.models import build_model
    for kind, layer_type in (("batch", keras.layers.BatchNormalization), ("group", keras.layers.GroupNormalization)):
        model = build_model("unet", 32, 4, depth=2, normalization=kind)
        norms = [layer for layer in model.layers if isinstance(layer, layer_type)]
        assert len(norms) == 2 * 3 + 2 * 3   # two per conv block (2 encoder, centre, 2 decoder) + up-sampling
        assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 32, 32, 1)


def test_learning_rate_schedules():
    from scratch_utils.train import learning_rate_schedule
    cosine = learning_rate_schedule("cosine", 1e-2, 100)
    assert float(cosine(0)) == pytest.approx(1e-2) and float(cosine(100)) == pytest.approx(0, abs=1e-8)
    assert float(cosine(50)) == pytest.approx(5e-3, rel=1e-4)          # half way down the cosine
    cycle = learning_rate_schedule("one_cycle", 1e-2, 100)            # 20 warm-up steps, then 80 down
    assert float(cycle(0)) == pytest.approx(1e-2 / 25)
    assert float(cycle(10)) == pytest.approx((1e-2 / 25 + 1e-2) / 2, rel=1e-3)   # linear climb
    assert float(cycle(20)) == pytest.approx(1e-2, rel=1e-4)
    assert float(cycle(60)) == pytest.approx(1e-2 * 0.5, rel=1e-3)     # half way down the 80 steps
    assert float(cycle(100)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_schedule("step", 1e-2, 100)


def test_precision_is_checked_and_set_for_one_model_at_a_time():
    import keras
    from scratch_utils.train import _strategy_and_precision
    with pytest.raises(ValueError, match="precision"):
        _strategy_and_precision("float16")
    try:
        _strategy_and_precision("mixed_bfloat16")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        _strategy_and_precision("float32")
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
