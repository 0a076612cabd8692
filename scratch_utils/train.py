"""Training a model into a run folder (notebooks 03-05, ``python -m scratch_utils train``).

The model learns on tiles cut from the photos at their working resolution
(:func:`scratch_utils.pipeline.make_tile_dataset`, a share of them centred on defects) and is
judged the way it will be used, on whole validation photos
(:class:`scratch_utils.validation.WholePhotoValidation`), which also keeps the best epoch. At
the end ``train`` chooses the operating point on those validation predictions
(:func:`scratch_utils.compare.choose_operating_point`), writes the run folder
(:mod:`scratch_utils.runs`) and only then scores the test split, once, at the photos' own
resolution. An interrupted run resumes (:mod:`scratch_utils.resume`).
"""
from __future__ import annotations

import platform
import random
import time
from pathlib import Path

import numpy as np

from .dataset import Prepared
from .files import atomic_write_json
from .profiles import TrainConfig
from .resume import KEEP_BEST, close_staging, open_staging, restore_progress, staging_folder
from .runs import load_run_config, read_history, save_operating_point, write_config

def set_seeds(seed: int, deterministic: bool = False) -> None:
    import keras

    random.seed(seed)          # called, not assigned (the earlier car-paint project assigned random.seed = seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


PRECISIONS = ("float32", "mixed_bfloat16")


def _strategy_and_precision(precision: str = "float32"):
    """MirroredStrategy with several GPUs; mixed float16 on any GPU, else ``precision`` (set for
    this model only: every training sets the policy it wants, so one run never inherits another's)."""
    import keras
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    gpus = tf.config.list_physical_devices("GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus else precision)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, len(gpus)


SCHEDULES = ("cosine", "one_cycle")
WARMUP_SHARE = 0.2   # one_cycle: the learning rate climbs for the first fifth of the steps


def learning_rate_schedule(kind: str, learning_rate: float, steps: int):
    """Cosine decay from ``learning_rate`` to 0 over ``steps``; or one cycle: a linear warm-up
    from a 25th of it over the first fifth, then the same decay (Keras' CosineDecay does both)."""
    import keras
    steps = max(1, steps)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    if kind == "one_cycle":
        warmup = max(1, int(WARMUP_SHARE * steps))
        return keras.optimizers.schedules.CosineDecay(learning_rate / 25, decay_steps=max(1, steps - warmup),
                                                      warmup_target=learning_rate, warmup_steps=warmup)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")


def compile_model(model, loss: str, learning_rate, steps: int, schedule: str = "cosine"):
    import keras

    from .losses import get_loss
    schedule = learning_rate_schedule(schedule, learning_rate, steps)
    # IoU of the training tiles at model resolution, named so: every score a user sees is
    # computed on whole photos at their own resolution (scratch_utils.evaluation).
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=get_loss(loss),
                  metrics=[keras.metrics.BinaryIoU([1], threshold=0.5, name="tile_iou")])
    return model


def train(prepared, out, config: TrainConfig | None = None, overwrite: bool = False,
          verbose: int = 2) -> Path:
    """Train one model on a prepared folder (a path or a :class:`Prepared`) and write its run
    folder; returns its path."""
    config = config or TrainConfig()
    out = Path(out)
    # Checked before TensorFlow loads: a mistake costs a second, not a start-up.
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"run folder {out} exists; choose another --out or pass --overwrite")
    prepared = Prepared.of(prepared)
    set_seeds(config.seed, config.deterministic)
    staging = staging_folder(out)
    resumed = open_staging(staging, {**config.identity(), "prepared": str(prepared.folder)})
    fit = Fitting(prepared, staging, config, verbose)
    validation, timing = fit.run(resumed)
    _evaluate_and_record(prepared, staging, config, validation, timing)
    return close_staging(staging, out)


class Fitting:
    """Build, compile and fit a model on tiles in its phases (a warm-up with the encoder
    frozen, then the rest), resuming from the staging folder's backups."""

    def __init__(self, prepared: Prepared, staging: Path, config: TrainConfig, verbose: int):
        self.prepared, self.staging, self.config, self.verbose = prepared, staging, config, verbose
        geometry = prepared.geometry
        self.tile = min(config.tile_size, geometry.size) if geometry.square else config.tile_size
        tiles = config.tiles_per_epoch or len(prepared.split("train"))
        self.steps = max(1, tiles // config.batch_size)

    def tiles(self, first_epoch: int):
        from .augment import AugmentConfig
        from .pipeline import make_tile_dataset
        c = self.config
        return make_tile_dataset(self.prepared, self.tile, c.defect_share, c.batch_size,
                                 AugmentConfig.tiles() if c.augment else None, c.seed,
                                 first_tile=first_epoch * self.steps * c.batch_size, padding=c.tile_padding)

    def build(self, strategy):
        from .models import build_model
        c = self.config
        with strategy.scope():
            model = build_model(c.model, None, c.base_filters, depth=c.depth, upsampling=c.upsampling,
                                encoder_weights=c.encoder_weights, freeze_encoder=c.warmup_epochs > 0,
                                normalization=c.normalization)
            return compile_model(model, c.loss, c.learning_rate, self.steps * c.epochs, c.schedule)

    def callbacks(self, resumed: int) -> list:
        from .validation import EpochLog, WholePhotoValidation
        c = self.config
        validation = WholePhotoValidation(self.prepared, c.loss, c.validate_every, c.epochs,
                                          checkpoint=self.staging / "model.keras",
                                          keep_best=self.staging / KEEP_BEST, patience=c.early_stopping)
        if resumed:
            restore_progress(self.staging, validation)
        run_name = self.staging.name.lstrip(".").removesuffix(".training")   # the run folder's name
        return [validation, EpochLog(self.staging / "history.csv", f"{run_name} ({c.model}, {c.loss})", c.epochs,
                                     verbose=self.verbose > 0)]

    def run(self, resumed: int):
        """Fit; returns the validation callback (with the best predictions) and the timings."""
        import keras

        from .models import set_encoder_trainable
        from .resume import backed_up_epoch
        c, warmup = self.config, self.config.warmup_epochs
        strategy, n_gpus = _strategy_and_precision(c.precision)
        try:
            model = self.build(strategy)
        finally:     # layers keep the policy they were built with; later models start from float32
            keras.mixed_precision.set_global_policy("float32")
        callbacks = self.callbacks(resumed)

        def fit(phase: str, first: int, last: int):
            # One backup folder per phase: the fine-tuning phase has another optimizer.
            backup = keras.callbacks.BackupAndRestore(self.staging / "backup" / phase, delete_checkpoint=False)
            start = max(first, min(backed_up_epoch(self.staging, phase), last))
            # The backup before the log: when an epoch's line is printed, the epoch is saved.
            model.fit(self.tiles(start), initial_epoch=first, epochs=last, steps_per_epoch=self.steps,
                      callbacks=[callbacks[0], backup, callbacks[1]], shuffle=False, verbose=0)

        started = time.perf_counter()
        if warmup:
            fit("warmup", 0, warmup)
        if c.epochs > warmup:
            if warmup:
                with strategy.scope():
                    set_encoder_trainable(model, True)
                    compile_model(model, c.loss, c.learning_rate * c.fine_tune_lr_factor,
                                  self.steps * (c.epochs - warmup), c.schedule)
            fit("main", warmup, c.epochs)
        return callbacks[0], self.timing(time.perf_counter() - started, n_gpus, resumed)

    def timing(self, seconds: float, n_gpus: int, resumed: int) -> dict:
        import keras
        epochs_run = len(read_history(self.staging / "history.csv"))
        tiles_seen = epochs_run * self.steps * self.config.batch_size
        timing = {"train_seconds": round(seconds, 1), "epochs_run": epochs_run, "tiles_seen": tiles_seen,
                  "train_tiles_per_s": round(tiles_seen / seconds, 2), "tile_size": self.tile,
                  "gpus": n_gpus, "python": platform.python_version(), "keras": keras.__version__}
        if resumed:
            timing["resumed_at_epoch"] = resumed
        return timing


def _evaluate_and_record(prepared: Prepared, staging: Path, config: TrainConfig, validation, timing: dict):
    """Choose the operating point on the validation photos, and only then score the test
    split, once; write config, operating point, predictions, metrics and curves."""
    from .compare import choose_operating_point, learning_warnings
    from .evaluation import inference_ms, predict_split, save_predictions, scores, sweep
    from .figures import plot_history
    from .runs import load_run_model
    best = load_run_model(staging)
    point = choose_operating_point(sweep(validation.best))
    warnings = learning_warnings(validation.best, point)
    save_operating_point(staging, point)
    write_config(staging, {**config.identity(), "geometry": prepared.geometry.as_dict(),
                           "prepared": str(prepared.folder),
                           "extra": {**timing, "parameters": int(best.count_params())}})
    test = sweep(predict_split(best, prepared, "test"))
    for split, predictions in (("val", validation.best), ("test", test)):
        save_predictions(predictions, staging / "predictions" / f"{split}.npz")
    metrics = {"val": scores(validation.best, point), "test": scores(test, point),
               "operating_point": point.as_dict(), "inference_ms_per_photo": inference_ms(best, prepared),
               "warnings": warnings}
    atomic_write_json(staging / "metrics.json", metrics)
    for warning in warnings:
        print(f"warning: {staging.name.lstrip('.').removesuffix('.training')}: {warning}", flush=True)
    plot_history(read_history(staging / "history.csv"), staging / "training_curves.png",
                 title=f"{config.model} ({config.loss})")


def train_or_reuse(prepared, out, config: TrainConfig, reuse: bool = True, verbose: int = 2) -> Path:
    """Reuse the run in ``out`` when it was trained the same way on the same data, else train.

    Notebook 05 reuses the runs of notebooks 03 and 04 this way; a changed setting, prepared
    folder or run format retrains (replacing the old run only once the new one is complete).
    """
    out, prepared = Path(out), Prepared.of(prepared)
    if reuse and (out / "model.keras").is_file():
        try:
            previous = load_run_config(out)
        except (FileNotFoundError, ValueError):    # missing, or an older format
            previous = None
        wanted = config.identity()
        if (previous and all(previous.get(key) == value for key, value in wanted.items())
                and Path(previous.get("prepared", "")) == prepared.folder):
            return out
    return train(prepared, out, config, overwrite=True, verbose=verbose)
