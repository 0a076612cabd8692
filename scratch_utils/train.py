"""Training, evaluation and prediction with run folders (notebooks 03-05, the CLI, the app).

A run folder holds everything needed to use and judge a model:
``model.keras`` (the epoch with the best validation loss, never chosen on test),
``config.json`` (model, input size, preprocessing, threshold and minimum area),
``history.csv``, ``training_curves.png`` and ``metrics.json`` (val and test scores).
Runs are trained in a temporary sibling folder and renamed when complete, so an
interrupted run never leaves a half-written run folder or clobbers an old one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .data import IMAGE_EXTENSIONS, ItemError, fit_box, load_manifest, open_photo
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, is_within


@dataclass
class TrainConfig:
    model: str = "unet"
    epochs: int = 10
    batch_size: int = 8
    base_filters: int = 64
    depth: int = 4
    upsampling: str = "transpose"
    loss: str = "bce_dice"
    learning_rate: float = 1e-3
    encoder_weights: str | None = None     # vgg16_unet only
    freeze_encoder_epochs: int = 0         # vgg16_unet: warm-up epochs with a frozen encoder
    fine_tune_lr_factor: float = 0.1       # ... then the encoder trains at lr * this
    augment: bool = True
    early_stopping: int = 0                # patience in epochs; 0 = off
    seed: int = 0
    deterministic: bool = False
    threshold: float = 0.5
    min_area: int = 1                      # pixels at model resolution
    # Filled in by train():
    image_size: int = 0
    fit: str = "stretch"
    prepared: str = ""
    extra: dict = field(default_factory=dict)


def set_seeds(seed: int, deterministic: bool = False) -> None:
    import keras

    random.seed(seed)          # called, not assigned (seed 000 assigned random.seed = seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


def _strategy_and_precision():
    """MirroredStrategy with several GPUs, mixed precision on any GPU, else the CPU default."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, len(gpus)


def compile_model(model, loss: str, learning_rate, steps: int):
    import keras

    from .losses import get_loss
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=get_loss(loss),
                  metrics=[keras.metrics.BinaryIoU([1], threshold=0.5, name="iou"),
                           keras.metrics.BinaryIoU([0, 1], threshold=0.5, name="miou"),
                           keras.metrics.Precision(name="precision"),
                           keras.metrics.Recall(name="recall")])
    return model


def _prepared_fit(prepared: Path) -> tuple[int, str]:
    report = json.loads((prepared / "report.json").read_text(encoding="utf-8"))
    return int(report["settings"]["size"]), report["settings"].get("fit", "stretch")


def train(prepared: str | os.PathLike, out: str | os.PathLike, config: TrainConfig | None = None,
          overwrite: bool = False, verbose: int = 2) -> Path:
    """Train one model on a prepared folder and write its run folder; returns its path."""
    config = config or TrainConfig()
    prepared, out = Path(prepared), Path(out)
    # Checked before TensorFlow loads: a mistake costs a second, not a start-up.
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"run folder {out} exists; choose another --out or pass --overwrite")
    if not (prepared / "manifest.csv").is_file():
        raise FileNotFoundError(f"{prepared} is not a prepared folder (no manifest.csv): "
                                f"run `python -m scratch_utils prepare` first")

    import keras

    from .models import build_model, set_encoder_trainable
    from .pipeline import make_dataset
    config.image_size, config.fit = _prepared_fit(prepared)
    config.prepared = str(prepared)
    set_seeds(config.seed, config.deterministic)
    strategy, n_gpus = _strategy_and_precision()

    n_train = len(load_manifest(prepared, "train"))
    train_data = make_dataset(prepared, "train", config.batch_size, augment=config.augment,
                              seed=config.seed)
    val_data = make_dataset(prepared, "val", config.batch_size)
    steps_per_epoch = math.ceil(n_train / config.batch_size)

    staging = out.with_name(f".{out.name}.training")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with strategy.scope():
        if config.model == "vgg16_unet":
            f = config.base_filters
            kwargs = dict(encoder_weights=config.encoder_weights,
                          freeze_encoder=config.freeze_encoder_epochs > 0,
                          decoder_filters=(8 * f, 4 * f, 2 * f, f))
        else:
            kwargs = dict(base_filters=config.base_filters, depth=config.depth)
        model = build_model(config.model, config.image_size, upsampling=config.upsampling, **kwargs)
        compile_model(model, config.loss, config.learning_rate, steps_per_epoch * config.epochs)

    callbacks = [keras.callbacks.ModelCheckpoint(staging / "model.keras", monitor="val_loss",
                                                 save_best_only=True),
                 keras.callbacks.CSVLogger(staging / "history.csv", append=True)]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss",
                                                       patience=config.early_stopping,
                                                       restore_best_weights=False))
    started = time.perf_counter()
    warmup = min(config.freeze_encoder_epochs, config.epochs) if config.model == "vgg16_unet" else 0
    if warmup:
        model.fit(train_data, validation_data=val_data, epochs=warmup, callbacks=callbacks,
                  verbose=verbose)
        with strategy.scope():
            set_encoder_trainable(model, True)
            remaining = steps_per_epoch * (config.epochs - warmup)
            compile_model(model, config.loss, config.learning_rate * config.fine_tune_lr_factor,
                          remaining)
    if config.epochs > warmup:
        model.fit(train_data, validation_data=val_data, initial_epoch=warmup,
                  epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - started
    epochs_run = len(read_history(staging / "history.csv"))

    best = load_run_model(staging)
    timing = {"train_seconds": round(train_seconds, 1), "epochs_run": epochs_run,
              "train_images_per_s": round(n_train * epochs_run / train_seconds, 2),
              "parameters": int(best.count_params()), "gpus": n_gpus,
              "python": platform.python_version(), "keras": keras.__version__}
    config.extra = {**config.extra, **timing}
    atomic_write_json(staging / "config.json", asdict(config))
    scores = {split: evaluate_model(best, prepared, split, config.threshold, config.min_area,
                                    config.batch_size)
              for split in ("val", "test")}
    scores["inference_ms_per_image"] = inference_ms(best, config.image_size)
    atomic_write_json(staging / "metrics.json", scores)
    plot_history(read_history(staging / "history.csv"), staging / "training_curves.png",
                 title=f"{config.model} ({config.loss})")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


# Fields that define what a run is; the rest (timings, paths) only describe it.
RUN_IDENTITY = ("model", "epochs", "batch_size", "base_filters", "depth", "upsampling", "loss",
                "learning_rate", "encoder_weights", "freeze_encoder_epochs", "fine_tune_lr_factor",
                "augment", "early_stopping", "seed")


def train_or_reuse(prepared, out, config: TrainConfig, reuse: bool = True, verbose: int = 2) -> Path:
    """Reuse the run in ``out`` when it was trained the same way on the same data, else train.

    Notebook 05 reuses the runs of notebooks 03 and 04 this way; a changed setting or
    prepared folder retrains (replacing the old run only once the new one is complete).
    """
    out = Path(out)
    if reuse and (out / "model.keras").is_file() and (out / "config.json").is_file():
        previous = load_run_config(out)
        wanted = asdict(config)
        same = all(previous.get(key) == wanted[key] for key in RUN_IDENTITY)
        if same and Path(previous.get("prepared", "")) == Path(prepared):
            return out
    return train(prepared, out, config, overwrite=True, verbose=verbose)


def read_history(path: Path) -> list[dict]:
    with Path(path).open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_history(history: list[dict], path: Path | None = None, title: str = ""):
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        axes[0].plot(epochs, [row[key] for row in history], marker="o", label=label)
    axes[0].set_title("loss")
    for key, label in (("iou", "train IoU"), ("val_iou", "val IoU"), ("val_recall", "val recall")):
        if key in history[0]:
            axes[1].plot(epochs, [row[key] for row in history], marker="o", label=label)
    axes[1].set_title("defect-class scores at threshold 0.5")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def load_run_model(run: str | os.PathLike):
    """The run's model, loaded in Keras safe mode (no lambdas, no pickled code)."""
    import keras

    from . import losses, models  # noqa: F401 - registers the custom classes
    path = Path(run) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a run folder made by `train`?")
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def load_run_config(run: str | os.PathLike) -> dict:
    """The run's config; the operating point chosen on validation data (notebook 05,
    ``operating_point.json``) overrides the training-time threshold and minimum area."""
    config = json.loads((Path(run) / "config.json").read_text(encoding="utf-8"))
    point_file = Path(run) / "operating_point.json"
    if point_file.is_file():
        point = json.loads(point_file.read_text(encoding="utf-8"))
        config["threshold"], config["min_area"] = point["threshold"], point["min_area"]
    return config


def save_operating_point(run: str | os.PathLike, point) -> Path:
    """Record the operating point chosen on validation data in the run folder."""
    path = Path(run) / "operating_point.json"
    atomic_write_json(path, {**asdict(point), "chosen_on": "val"})
    return path


def predict_split(model, prepared: Path, split: str, batch_size: int = 8):
    """(true masks, predicted probabilities, manifest rows) of one split."""
    from .pipeline import make_dataset

    dataset = make_dataset(prepared, split, batch_size)
    truths, probabilities = [], []
    for images, masks in dataset:
        truths.append(masks.numpy()[..., 0] > 0.5)
        probabilities.append(np.asarray(model.predict_on_batch(images))[..., 0])
    return np.concatenate(truths), np.concatenate(probabilities), load_manifest(prepared, split)


def evaluate_model(model, prepared, split="test", threshold=0.5, min_area=1, batch_size=8) -> dict:
    from .metrics import evaluate_predictions

    truths, probabilities, _ = predict_split(model, Path(prepared), split, batch_size)
    return evaluate_predictions(truths, probabilities, threshold, min_area)


def evaluate_run(run, prepared=None, split="test") -> dict:
    config = load_run_config(run)
    prepared = Path(prepared or config["prepared"])
    return evaluate_model(load_run_model(run), prepared, split, config["threshold"],
                          config["min_area"], config["batch_size"])


def inference_ms(model, image_size: int, batch_size: int = 8, repeats: int = 5) -> float:
    images = np.random.default_rng(0).random((batch_size, image_size, image_size, 3), np.float32)
    model.predict_on_batch(images)
    started = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(images)
    return round((time.perf_counter() - started) / (repeats * batch_size) * 1000, 2)


# --------------------------------------------------------------------------- predict

class Predictor:
    """A run's model with its preprocessing, threshold and minimum area: the same
    decision for ``predict``, the report and the app."""

    def __init__(self, run: str | os.PathLike, threshold: float | None = None,
                 min_area: int | None = None):
        self.config = load_run_config(run)
        self.model = load_run_model(run)
        self.size = int(self.config["image_size"])
        self.fit = self.config.get("fit", "stretch")
        self.threshold = float(self.config["threshold"] if threshold is None else threshold)
        self.min_area = int(self.config["min_area"] if min_area is None else min_area)

    def open(self, source) -> tuple[Image.Image, Image.Image]:
        """(photo at full resolution, photo decoded the way preparation decodes it).

        ``source`` is a path or the bytes of an upload. Preparation decodes JPEGs at a
        reduced scale (reduce-on-decode); the model must see the same pixels here, or
        the app and ``predict`` would disagree with the notebooks on some parts (3 of the
        60 default test parts did with a full decode). Bad input raises ``ItemError``.
        """
        def fresh():
            return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)

        model_photo, full = open_photo(fresh(), self.size, self.fit)
        photo = model_photo if model_photo.size == tuple(full) else open_photo(fresh())[0]
        return photo, model_photo

    def preprocess(self, photo: Image.Image, full_size: tuple[int, int] | None = None
                   ) -> tuple[np.ndarray, tuple]:
        """Model input in [0, 1] exactly as preparation writes it; ``full_size`` is the
        photo's original size when ``photo`` was decoded at a reduced scale."""
        width, height = full_size or photo.size
        box_w, box_h, x0, y0 = fit_box(width, height, self.size, self.fit)
        canvas = Image.new("RGB", (self.size, self.size))
        canvas.paste(photo.resize((box_w, box_h), Image.Resampling.LANCZOS, reducing_gap=3.0),
                     (x0, y0))
        return np.asarray(canvas, dtype=np.float32) / 255.0, (box_w, box_h, x0, y0)

    def predict_photo(self, photo: Image.Image, model_photo: Image.Image | None = None) -> dict:
        """Probability map and mask at the photo's own size, verdict and area share.

        Pass ``model_photo`` from :meth:`open` to match preparation pixel for pixel; an
        image already in memory alone is resized from full resolution (nearly the same)."""
        width, height = photo.size
        x, (box_w, box_h, x0, y0) = self.preprocess(model_photo or photo, (width, height))
        probability = np.asarray(self.model.predict_on_batch(x[None]))[0, ..., 0]
        content = probability[y0:y0 + box_h, x0:x0 + box_w]
        area = int((content >= self.threshold).sum())
        full = np.asarray(Image.fromarray(content.astype(np.float32)).resize(
            (width, height), Image.Resampling.BILINEAR))
        mask = full >= self.threshold
        return {"probability": full, "mask": mask, "defective": area >= max(1, self.min_area),
                "defect_area_share": float(mask.mean()), "max_probability": float(content.max()),
                "model_area_pixels": area, "model_mask": content >= self.threshold,
                "scale": (width / box_w, height / box_h)}


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file()
                      and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    raise FileNotFoundError(f"input {path} does not exist")


def predict(run, inputs, out, threshold: float | None = None, progress: bool = True) -> dict:
    """Masks (0/255, original size), overlays and ``predictions.csv`` for photos."""
    from tqdm.auto import tqdm

    from .report import mask_image, overlay_image, png_bytes
    inputs, out = Path(inputs), Path(out)
    source_dir = inputs if inputs.is_dir() else inputs.parent
    if is_within(out, source_dir):
        raise ValueError(f"the output folder {out} is inside the input folder {source_dir}; "
                         f"choose a folder outside it (inputs are never written to)")
    predictor = Predictor(run, threshold)
    paths = _inputs(inputs)
    rows, skipped = [], []
    for path in tqdm(paths, desc="predicting", unit="img", disable=not progress or len(paths) < 20):
        try:
            photo, model_photo = predictor.open(path)
        except ItemError as exc:
            skipped.append({"file": str(path), "reason": str(exc)})
            continue
        result = predictor.predict_photo(photo, model_photo)
        stem = path.stem if inputs.is_file() else path.relative_to(inputs).with_suffix("").as_posix().replace("/", "__")
        atomic_write_bytes(out / f"{stem}.png", png_bytes(mask_image(result["mask"])))
        atomic_write_bytes(out / f"{stem}_overlay.png", png_bytes(overlay_image(photo, result["mask"])))
        rows.append({"stem": stem, "source": str(path),
                     "defective": "yes" if result["defective"] else "no",
                     "defect_area_share": round(result["defect_area_share"], 6),
                     "max_probability": round(result["max_probability"], 4)})
    lines = ["stem,source,defective,defect_area_share,max_probability"]
    lines += [",".join(str(row[k]).replace(",", " ") for k in
                       ("stem", "source", "defective", "defect_area_share", "max_probability"))
              for row in rows]
    atomic_write_text(out / "predictions.csv", "\n".join(lines) + "\n")
    return {"predicted": len(rows), "skipped": skipped, "out": str(out),
            "defective": sum(r["defective"] == "yes" for r in rows)}


