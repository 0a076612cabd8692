"""Benchmark: our models' training and inference speed against plain Keras models.

For each model (Encoder-Decoder, U-Net, VGG16-U-Net at the default profile's size), in
the same run and on the same in-memory batches: (a) the model from ``scratch_utils.models``
compiled by ``scratch_utils.train.compile_model`` (BCE + Dice, cosine decay), and (b) a
plain Keras functional model with the same layers
and filters, written inline here, compiled with Adam and BCE and no metrics. Reports
training images/s, inference ms/image and the ratios (target: within 10%); writes
``benchmarks/results/models.json``.

    python benchmarks/bench_models.py [--size 96] [--filters 16] [--steps 12] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from scratch_utils import models  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.train import compile_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def plain_block(x, filters):
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return x


def plain_unet(size, f, skips=True, depth=4):
    inputs = keras.Input((size, size, 3))
    x, features = inputs, []
    for level in range(depth):
        x = plain_block(x, f * 2 ** level)
        features.append(x)
        x = layers.MaxPooling2D()(x)
    x = plain_block(x, f * 2 ** depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(f * 2 ** level, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        if skips:
            x = layers.Concatenate()([x, features[level]])
        x = plain_block(x, f * 2 ** level)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def plain_vgg16_unet(size, f):
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    x = vgg.get_layer("block5_conv3").output
    for name, filters in zip(("block4_conv3", "block3_conv3", "block2_conv2", "block1_conv2"),
                             (8 * f, 4 * f, 2 * f, f)):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Concatenate()([x, vgg.get_layer(name).output])
        x = plain_block(x, filters)
    return keras.Model(vgg.input, layers.Conv2D(1, 1, activation="sigmoid")(x))


def prepare(model, images, masks, batch, ours: bool):
    """Compile as the real code does (ours) or the plainest way (baseline), then warm up."""
    if ours:
        compile_model(model, "bce_dice", 1e-3, 1000)
    else:
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    model.fit(images[:batch * 2], masks[:batch * 2], batch_size=batch, epochs=1, verbose=0)
    model.predict_on_batch(images[:batch])


def one_round(model, images, masks, batch, steps):
    started = time.perf_counter()
    model.fit(images[:batch * steps], masks[:batch * steps], batch_size=batch, epochs=1, verbose=0)
    train_rate = batch * steps / (time.perf_counter() - started)
    started = time.perf_counter()
    for k in range(steps):
        model.predict_on_batch(images[k * batch:(k + 1) * batch])
    infer_ms = (time.perf_counter() - started) / (batch * steps) * 1000
    return train_rate, infer_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="the default profile's image size")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["encoder_decoder", "unet", "vgg16_unet"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    images = rng.random((n, args.size, args.size, 3), dtype=np.float32)
    masks = (rng.random((n, args.size, args.size, 1)) > 0.99).astype(np.float32)
    f = args.filters
    contenders = {
        "encoder_decoder": (lambda: models.encoder_decoder(args.size, f),
                            lambda: plain_unet(args.size, f, skips=False)),
        "unet": (lambda: models.unet(args.size, f), lambda: plain_unet(args.size, f)),
        "vgg16_unet": (lambda: models.vgg16_unet(args.size, None, decoder_filters=(8 * f, 4 * f, 2 * f, f)),
                       lambda: plain_vgg16_unet(args.size, f)),
    }
    results = {}
    for name in args.models:
        ours_builder, plain_builder = contenders[name]
        ours, plain = ours_builder(), plain_builder()
        assert ours.count_params() == plain.count_params(), (name, ours.count_params(), plain.count_params())
        prepare(ours, images, masks, args.batch, ours=True)
        prepare(plain, images, masks, args.batch, ours=False)
        # Interleaved rounds, best of each: both see the same machine state, and the
        # best round is the least disturbed. On this 2-core CPU a training round lands in
        # one of two speed modes (about 37 or 55 img/s for the small models) whatever the
        # model, so one round per side would compare luck, not code; medians are kept too.
        ours_rounds, plain_rounds = [], []
        for _ in range(args.rounds):
            ours_rounds.append(one_round(ours, images, masks, args.batch, args.steps))
            plain_rounds.append(one_round(plain, images, masks, args.batch, args.steps))
        ours_train = max(r[0] for r in ours_rounds)
        ours_infer = min(r[1] for r in ours_rounds)
        plain_train = max(r[0] for r in plain_rounds)
        plain_infer = min(r[1] for r in plain_rounds)
        ours_median = float(np.median([r[0] for r in ours_rounds]))
        plain_median = float(np.median([r[0] for r in plain_rounds]))
        results[name] = {
            "parameters": int(ours.count_params()),
            "ours_train_images_per_s": round(ours_train, 2),
            "plain_train_images_per_s": round(plain_train, 2),
            "train_ratio": round(ours_train / plain_train, 3),
            "median_train_ratio": round(ours_median / plain_median, 3),
            "ours_inference_ms_per_image": round(ours_infer, 2),
            "plain_inference_ms_per_image": round(plain_infer, 2),
            "inference_ratio": round(ours_infer / plain_infer, 3),
        }
        r = results[name]
        print(f"{name:16s} {r['parameters'] / 1e6:5.2f} M | train {r['ours_train_images_per_s']:6.1f} vs "
              f"{r['plain_train_images_per_s']:6.1f} img/s ({r['train_ratio']:.2f}x, median "
              f"{r['median_train_ratio']:.2f}x) | inference "
              f"{r['ours_inference_ms_per_image']:6.1f} vs {r['plain_inference_ms_per_image']:6.1f} ms/img "
              f"({r['inference_ratio']:.2f}x)", flush=True)
    out = HERE / "results" / "models.json"
    atomic_write_json(out, {"benchmark": "models", "size": args.size, "base_filters": f,
                            "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                            "models": results,
                            "target": "ratios within 10% (0.9-1.1)", "cpu_count": os.cpu_count(),
                            "machine": platform.machine(), "keras": keras.__version__})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
