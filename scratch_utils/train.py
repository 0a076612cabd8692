"""Training with run folders (notebooks 03-05, the CLI).

The model learns on tiles cut from the photos at their working resolution
(:func:`scratch_utils.pipeline.make_tile_dataset`, a share of them centred on defects) and
is judged the way it will be used: after every epoch, :func:`whole_photo_validation` predicts
each validation photo whole (:mod:`scratch_utils.predict`, the app's code path) and the
checkpoint with the lowest whole-photo validation loss is kept (:func:`whole_photo_validation`). At the end ``train``
chooses the operating point (the mask threshold with the best Dice, and the decision rule:
pixel threshold and minimum defect region for >= 95% caught) on those validation predictions, writes it to the run folder, and scores the test split once, at the photos'
own resolution.

A run folder holds ``model.keras``, ``config.json``, ``operating_point.json``,
``history.csv``, ``training_curves.png``, ``metrics.json`` and ``predictions/`` (the validation
and test probabilities, reused by notebook 05). Runs are trained in a
hidden sibling folder and renamed when complete, so an interrupted run never leaves a
half-written run folder or clobbers an old one.

A disconnect loses at most one epoch: the staging folder keeps a backup after every epoch
(``keras.callbacks.BackupAndRestore``: weights, optimizer state, epoch), and ``train`` run
again with the same settings on the same data resumes from the last finished epoch, with
its history, best checkpoint and best validation predictions.
"""
from __future__ import annotations

import csv
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

from .preparation import load_manifest, prepared_geometry
from .files import atomic_write_json
from .predict import (Predictor, load_run_config, load_run_model, predict,  # noqa: F401 - re-exported
                      probability_map)


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
    freeze_encoder_epochs: int = 0         # vgg16_unet: epochs with a frozen encoder first
    fine_tune_lr_factor: float = 0.1       # ... then the encoder trains at lr * this
    tile_size: int = 128                   # training crops (whole photo if it is smaller)
    defect_share: float = 0.5              # share of tiles centred on a defect pixel
    tiles_per_epoch: int = 0               # 0: one tile per training photo
    augment: bool = True
    early_stopping: int = 0                # patience in validated epochs; 0 = off
    validate_every: int = 1                # score the validation photos every n epochs (and the last)
    seed: int = 0
    deterministic: bool = False
    threshold: float = 0.5                 # replaced by the operating point train chooses
    min_area: int = 1                      # pixels at model resolution
    @property
    def warmup_epochs(self) -> int:
        """Epochs with a frozen encoder first: only the VGG16-U-Net has one to freeze
        (``Profile.training`` sets how long, and never freezes a random encoder)."""
        if self.model != "vgg16_unet":
            return 0
        return min(self.freeze_encoder_epochs, self.epochs)

    # Filled in by train():
    geometry: dict = field(default_factory=dict)
    prepared: str = ""
    extra: dict = field(default_factory=dict)


def set_seeds(seed: int, deterministic: bool = False) -> None:
    import keras

    random.seed(seed)          # called, not assigned (the earlier car-paint project assigned random.seed = seed)
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


def whole_photo_validation(prepared, loss: str, keep_best: Path | None = None, every: int = 1,
                           epochs: int | None = None, checkpoint: Path | None = None,
                           patience: int = 0):
    """A Keras callback that scores the whole validation photos and keeps the best epoch.

    After every ``every``-th epoch and after the last of ``epochs``: predict every validation
    photo whole, as ``predict`` does, and log ``val_loss`` (the training loss over all their
    pixels, against the prepared masks) and ``val_dice`` / ``val_precision`` / ``val_recall`` at
    threshold 0.5; the epochs in between log NaN, for the curves. Scoring whole photos costs as
    much as a third of an epoch on a CPU, and with a learning rate that decays to zero the best
    epoch is nearly always one of the last, so the CPU profile scores every other epoch.

    On a lower ``val_loss`` it saves the model to ``checkpoint`` and keeps the predictions, on
    which ``train`` then chooses the operating point; with ``keep_best`` (an ``.npz`` path)
    they are also written there, with their epoch and loss beside them, for a resumed run.
    ``patience`` > 0 stops training after that many scored epochs without improvement.
    (Keras' ModelCheckpoint and EarlyStopping are not used: they take a first NaN for an
    improvement and never improve on it again.) Built in a function so that importing this
    module loads no Keras.
    """
    import keras

    from .evaluation import SplitPredictions, prepared_inputs
    from .losses import get_loss

    if every < 1:
        raise ValueError(f"validate_every must be at least 1, got {every}")

    class WholePhotoValidation(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.every, self.epochs = every, epochs
            self.prepared = Path(prepared)
            self.rows = load_manifest(self.prepared, "val")
            if not self.rows:
                raise ValueError(f"the 'val' split of {prepared} is empty: the checkpoint "
                                 f"and operating point need validation photos")
            self.inputs, self.truth = [], []
            for (image, box), row in zip(prepared_inputs(self.prepared, self.rows), self.rows):
                x0, y0, w, h = box
                self.inputs.append(((image * 255).round().astype(np.uint8), box))
                mask = np.asarray(_open_mask(self.prepared, row["stem"]))
                self.truth.append(mask[y0:y0 + h, x0:x0 + w] > 127)
            self.stale = 0
            self.loss = get_loss(loss)
            self.best_loss, self.best = math.inf, None

        def restore(self, best_loss: float, keep: Path) -> None:
            """Resume: the best loss so far and its predictions, kept in ``keep``."""
            self.best_loss = best_loss
            with np.load(keep) as stored:
                self.best = SplitPredictions(self.prepared, self.rows,
                                             [stored[row["stem"]] for row in self.rows])

        def scores_after(self, epoch: int) -> bool:
            return (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            if not self.scores_after(epoch):
                for key in ("val_loss", "val_dice", "val_precision", "val_recall"):
                    logs[key] = math.nan  # CSVLogger takes its columns from the first epoch's logs
                return
            probabilities = []
            for image, (x0, y0, w, h) in self.inputs:
                probability = probability_map(self.model, image.astype(np.float32) / 255.0)
                probabilities.append(probability[y0:y0 + h, x0:x0 + w])
            truth = np.concatenate([t.reshape(-1) for t in self.truth]).astype(np.float32)
            predicted = np.concatenate([p.reshape(-1) for p in probabilities])
            value = float(self.loss(truth[None, :, None, None], predicted[None, :, None, None]))
            hits = predicted >= 0.5
            tp = float(np.sum(hits & (truth > 0)))
            logs["val_loss"] = value
            logs["val_dice"] = 2 * tp / max(1.0, hits.sum() + truth.sum())
            logs["val_precision"] = tp / hits.sum() if hits.sum() else 1.0
            logs["val_recall"] = tp / truth.sum() if truth.sum() else 1.0
            if value < self.best_loss:
                self.best_loss, self.stale = value, 0
                self.best = SplitPredictions(self.prepared, self.rows,
                                             [p.astype(np.float16) for p in probabilities])
                if checkpoint is not None:    # written whole, then renamed: a kill leaves the last one
                    partial = checkpoint.with_name(f"{checkpoint.stem}.partial.keras")
                    self.model.save(partial)
                    os.replace(partial, checkpoint)
                if keep_best is not None:     # what a resumed run needs of this epoch
                    from .evaluation import save_predictions
                    save_predictions(self.best, keep_best)
                    atomic_write_json(keep_best.with_suffix(".json"), {"epoch": epoch, "val_loss": value})
            else:
                self.stale += 1
                if patience and self.stale >= patience:
                    self.model.stop_training = True

    return WholePhotoValidation()


def _open_mask(prepared: Path, stem: str):
    from PIL import Image
    with Image.open(prepared / "masks" / f"{stem}.png") as handle:
        return handle.convert("L").copy()


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
    geometry = prepared_geometry(prepared)
    config.geometry, config.prepared = geometry.as_dict(), str(prepared)
    set_seeds(config.seed, config.deterministic)
    staging = out.with_name(f".{out.name}.training")
    resumed = _prepare_staging(staging, {**_identity(config), "prepared": str(prepared)})
    validation, timing = _fit(prepared, staging, config, resumed, verbose)
    _evaluate_and_record(prepared, staging, config, validation, timing)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _fit(prepared: Path, staging: Path, config: TrainConfig, resumed: int, verbose: int):
    """Build, compile and fit the model on tiles in its phases (warm-up, then the rest),
    resuming from the staging folder's backups; returns the validation callback (with the
    best whole-photo predictions) and the timing facts."""
    import keras

    from .augment import AugmentConfig
    from .models import build_model, set_encoder_trainable
    from .pipeline import make_tile_dataset
    geometry = prepared_geometry(prepared)
    strategy, n_gpus = _strategy_and_precision()
    tile = min(config.tile_size, geometry.size) if geometry.square else config.tile_size
    steps = max(1, (config.tiles_per_epoch or len(load_manifest(prepared, "train"))) // config.batch_size)
    augment = AugmentConfig.tiles() if config.augment else None

    def tiles(first_epoch: int):
        return make_tile_dataset(prepared, tile, config.defect_share, config.batch_size, augment,
                                 config.seed, first_tile=first_epoch * steps * config.batch_size)

    warmup = config.warmup_epochs
    with strategy.scope():
        model = build_model(config.model, None, config.base_filters, depth=config.depth,
                            upsampling=config.upsampling, encoder_weights=config.encoder_weights,
                            freeze_encoder=warmup > 0)
        compile_model(model, config.loss, config.learning_rate, steps * config.epochs)
    keep_best = staging / "predictions" / "val-best.npz"
    validation = whole_photo_validation(prepared, config.loss, keep_best, config.validate_every,
                                        config.epochs, checkpoint=staging / "model.keras",
                                        patience=config.early_stopping)
    if resumed:
        _restore_progress(staging, validation, keep_best)
    callbacks = [validation, keras.callbacks.CSVLogger(staging / "history.csv", append=True)]

    def backup(phase: str):
        # One backup folder per phase: the fine-tuning phase has another optimizer.
        return keras.callbacks.BackupAndRestore(staging / "backup" / phase, delete_checkpoint=False)

    started = time.perf_counter()
    if warmup:
        model.fit(tiles(min(_backed_up_epoch(staging, "warmup"), warmup)), epochs=warmup,
                  steps_per_epoch=steps, callbacks=callbacks + [backup("warmup")], shuffle=False,
                  verbose=verbose)
    if config.epochs > warmup:
        if warmup:
            with strategy.scope():
                set_encoder_trainable(model, True)
                compile_model(model, config.loss, config.learning_rate * config.fine_tune_lr_factor,
                              steps * (config.epochs - warmup))
        model.fit(tiles(max(warmup, _backed_up_epoch(staging, "main"))), initial_epoch=warmup,
                  epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks + [backup("main")],
                  shuffle=False, verbose=verbose)
    seconds = time.perf_counter() - started
    shutil.rmtree(staging / "backup", ignore_errors=True)
    for leftover in (keep_best, keep_best.with_suffix(".json"), staging / IDENTITY_FILE):
        leftover.unlink(missing_ok=True)
    epochs_run = len(read_history(staging / "history.csv"))
    timing = {"train_seconds": round(seconds, 1), "epochs_run": epochs_run,
              "tiles_seen": epochs_run * steps * config.batch_size,
              "train_tiles_per_s": round(epochs_run * steps * config.batch_size / seconds, 2),
              "tile_size": tile, "gpus": n_gpus, "python": platform.python_version(),
              "keras": keras.__version__}
    if resumed:
        timing["resumed_at_epoch"] = resumed
    return validation, timing


def _evaluate_and_record(prepared: Path, staging: Path, config: TrainConfig, validation, timing: dict):
    """Choose the operating point on the validation photos, and only then score the test
    split, once; write config, operating point, predictions, metrics and curves."""
    from .compare import choose_operating_point
    from .evaluation import predict_split, save_predictions, scores, sweep
    best = load_run_model(staging)
    point = choose_operating_point(sweep(validation.best))
    save_operating_point(staging, point)
    config.extra = {**config.extra, **timing, "parameters": int(best.count_params()),
                    "run_format": RUN_FORMAT}
    atomic_write_json(staging / "config.json", asdict(config))
    test = sweep(predict_split(best, prepared, "test"))
    for split, predictions in (("val", validation.best), ("test", test)):
        save_predictions(predictions, staging / "predictions" / f"{split}.npz")
    metrics = {"val": scores(validation.best, point.threshold, point.min_area, point.mask_threshold),
               "test": scores(test, point.threshold, point.min_area, point.mask_threshold),
               "operating_point": asdict(point),
               "inference_ms_per_photo": inference_ms(best, prepared)}
    atomic_write_json(staging / "metrics.json", metrics)
    plot_history(read_history(staging / "history.csv"), staging / "training_curves.png",
                 title=f"{config.model} ({config.loss})")


IDENTITY_FILE = "identity.json"


def _identity(config: TrainConfig) -> dict:
    values = asdict(config)
    return {key: values[key] for key in RUN_IDENTITY}


def _backed_up_epoch(staging: Path, phase: str) -> int:
    """Epochs finished according to a phase's backup (0 when there is none)."""
    metadata = staging / "backup" / phase / "training_metadata.json"
    if not metadata.is_file():
        return 0
    return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])


def _prepare_staging(staging: Path, identity: dict) -> int:
    """Keep a staging folder left by an interrupted run of the same settings on the same data
    and return the epochs it finished; else start an empty one and return 0."""
    marker = staging / IDENTITY_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        finished = max(_backed_up_epoch(staging, "warmup"), _backed_up_epoch(staging, "main"))
        if finished:
            return finished
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_write_json(marker, identity)
    return 0


def _restore_progress(staging: Path, validation, keep_best: Path) -> None:
    """Resume: history cut to the finished epochs; the validation callback gets back the best
    loss so far (so it checkpoints only a better epoch) and its predictions (for the
    operating point)."""
    finished = max(_backed_up_epoch(staging, "warmup"), _backed_up_epoch(staging, "main"))
    history_path = staging / "history.csv"
    history = read_history(history_path) if history_path.is_file() else []
    history = [row for row in history if row["epoch"] < finished]
    if history:
        with history_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows({k: (int(v) if k == "epoch" else v) for k, v in row.items()}
                             for row in history)
    else:
        history_path.unlink(missing_ok=True)
    best_file = keep_best.with_suffix(".json")
    if not (history and best_file.is_file() and keep_best.is_file()):
        return
    best = json.loads(best_file.read_text(encoding="utf-8"))
    if best["epoch"] < finished:
        validation.restore(best["val_loss"], keep_best)


# What a run folder holds changed (2: the mask threshold apart from the decision rule); an
# older run is trained again rather than reused with scores it does not have.
RUN_FORMAT = 2

# Fields that define what a run is; the rest (timings, paths) only describe it.
RUN_IDENTITY = ("model", "epochs", "batch_size", "base_filters", "depth", "upsampling", "loss",
                "learning_rate", "encoder_weights", "freeze_encoder_epochs", "fine_tune_lr_factor",
                "tile_size", "defect_share", "tiles_per_epoch", "augment", "early_stopping",
                "validate_every", "seed")


def train_or_reuse(prepared, out, config: TrainConfig, reuse: bool = True, verbose: int = 2) -> Path:
    """Reuse the run in ``out`` when it was trained the same way on the same data, else train.

    Notebook 05 reuses the runs of notebooks 03 and 04 this way; a changed setting or
    prepared folder retrains (replacing the old run only once the new one is complete).
    """
    out = Path(out)
    if reuse and (out / "model.keras").is_file() and (out / "config.json").is_file():
        previous = load_run_config(out)
        wanted = asdict(config)
        same = (all(previous.get(key) == wanted[key] for key in RUN_IDENTITY)
                and previous.get("extra", {}).get("run_format") == RUN_FORMAT)
        if same and Path(previous.get("prepared", "")) == Path(prepared) and "geometry" in previous:
            return out
    return train(prepared, out, config, overwrite=True, verbose=verbose)


def read_history(path: Path) -> list[dict]:
    with Path(path).open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_history(history: list[dict], path: Path | None = None, title: str = ""):
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))

    def plot(ax, key, label):
        # Validation may be scored every few epochs only (NaN in between): plot the scored ones.
        points = [(epoch, row[key]) for epoch, row in zip(epochs, history) if math.isfinite(row[key])]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)

    plot(axes[0], "loss", "training tiles")
    plot(axes[0], "val_loss", "validation photos (whole)")
    axes[0].set_title("loss")
    for key, label in (("val_dice", "val Dice"), ("val_precision", "val precision"),
                       ("val_recall", "val recall")):
        if key in history[0]:
            plot(axes[1], key, label)
    axes[1].set_title("validation photos, defect pixels at threshold 0.5")
    axes[1].set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        # Whole epochs on both panels, over the same range: a 2-epoch run with one scored
        # epoch would otherwise get ticks at 1.2, 1.4, ... and a right panel of its own.
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path:
        from .report import write_figure
        write_figure(fig, path, dpi=100)
        plt.close(fig)
    return fig


def save_operating_point(run: str | os.PathLike, point) -> Path:
    """Record the operating point chosen on validation data in the run folder."""
    path = Path(run) / "operating_point.json"
    atomic_write_json(path, {**asdict(point), "chosen_on": "val"})
    return path


def evaluate_run(run, prepared=None, split="test", threshold: float | None = None) -> dict:
    """Scores of a run on a split, at the photos' own resolution, at the run's operating
    point (or one pixel ``threshold`` for both the mask and the decision)."""
    from .evaluation import predict_split, scores, sweep
    config = load_run_config(run)
    prepared = Path(prepared or config["prepared"])
    predictions = sweep(predict_split(load_run_model(run), prepared, split))
    if threshold is not None:
        return scores(predictions, threshold, config["min_area"], threshold)
    return scores(predictions, config["threshold"], config["min_area"], config["mask_threshold"])


def inference_ms(model, prepared: Path, repeats: int = 3) -> float:
    """Milliseconds to predict one whole validation photo at the working geometry (median)."""
    from .evaluation import prepared_inputs
    image, _ = next(prepared_inputs(Path(prepared), load_manifest(prepared, "val")[:1]))
    probability_map(model, image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        probability_map(model, image)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 1)
