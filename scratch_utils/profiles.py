"""The settings: every training setting in one place (:class:`TrainConfig`), the three run
profiles built from it, and the folders each profile writes to.

``smoke`` keeps every notebook to seconds (tests), ``default`` is the committed CPU run, ``full``
uses the earlier projects' settings (GPU / Colab). The profile comes from the ``SCRATCH_PROFILE``
environment variable, so that one notebook serves all three. Light to import (the CLI reads its
defaults from here without loading TensorFlow).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

PROFILE_NAMES = ("smoke", "default", "full")


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. The defaults are the default profile's recipe, chosen on
    validation (``docs/recipe.md``); every field is part of what a run is, so a run trained with
    other values is another run (:meth:`identity`)."""
    model: str = "unet"
    loss: str = "bce_dice"
    epochs: int = 8
    batch_size: int = 4
    base_filters: int = 8
    depth: int = 4
    upsampling: str = "transpose"
    learning_rate: float = 2e-3
    schedule: str = "cosine"               # cosine decay | one_cycle (warm-up, then cosine decay)
    tile_size: int = 128                   # training crops at the working scale (whole photo if smaller)
    tiles_per_epoch: int = 1280            # 0: one tile per training photo
    defect_share: float = 0.9              # share of tiles centred on a defect pixel
    hard_negative_share: float = 0.1       # share of tiles on good photos where the model fires (mined as it trains)
    tile_padding: str = "reflect"          # photos smaller than a tile: reflect (as prediction) | zeros
    augment: bool = True
    zoom: float = 0.0                      # tiles zoomed at random, each axis apart (0.3: 0.7-1.3x; docs/recipe.md §1)
    normalization: str = "batch"           # batch | group (scratch_utils.models.normalization_layer)
    validate_every: int = 4                # score the validation photos every n epochs (and the last)
    early_stopping: int = 0                # patience in validated epochs; 0 = off
    encoder_weights: str | None = None     # vgg16_unet only: imagenet | hed | None
    freeze_encoder_epochs: int = 0         # vgg16_unet: epochs with a frozen encoder first ...
    fine_tune_lr_factor: float = 0.1       # ... then the encoder trains at learning_rate * this
    precision: str = "float32"             # float32 | mixed_bfloat16 (CPUs with bf16 units); any GPU: mixed_float16
    decision: str = "regions"              # how a part is called: regions | head (scratch_utils.decision)
    head_photos: int = 0                   # training photos the part head is fitted on (0: all of them)
    jit_compile: bool = False              # XLA for the training step (benchmarks/bench_throughput.py)
    seed: int = 0
    deterministic: bool = False

    @property
    def warmup_epochs(self) -> int:
        """Epochs with a frozen encoder first: only the VGG16-U-Net has one to freeze."""
        if self.model != "vgg16_unet":
            return 0
        return min(self.freeze_encoder_epochs, self.epochs)

    def identity(self) -> dict:
        """What defines the run: every field."""
        return asdict(self)

    def but(self, **changes) -> "TrainConfig":
        """This config with ``changes`` (a clear error for a field that does not exist)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"TrainConfig has no setting {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from a run's ``config.json`` (which also holds what the run measured)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class SyntheticSplit:
    """One split of the course's synthetic set: ``count`` parts of seed ``seed``, about
    ``good_fraction`` of them good."""
    count: int
    seed: int
    good_fraction: float


@dataclass(frozen=True)
class Profile:
    name: str
    photo_size: tuple[int, int]            # synthetic photos, (width, height)
    synthetic: dict                        # split -> SyntheticSplit: generated apart, so val and test
    published: bool                        # write into the repo's figures/ and results/ (never smoke)
    training: TrainConfig = TrainConfig()  # every model's recipe ...
    vgg16: dict = field(default_factory=dict)   # ... and what the VGG16-U-Net changes in it
    square_size: int = 128                 # the 128-px squash, kept as the comparison's baseline
    # Every synthetic defect drawn at least synthetic.VISIBLE_LEVELS from its paint: a label no one
    # could see in the photo measures the generator, not the model (benchmarks/bench_visibility.py).
    visible_defects: bool = True

    def train_config(self, model: str = "unet", encoder_weights: str | None = None, **changes) -> TrainConfig:
        """The profile's recipe for ``model``, with ``changes``. A pretrained VGG16 encoder is
        frozen for the first fifth of the epochs (throughout where ``vgg16`` says so: the CPU
        profile); a random one is never frozen."""
        config = self.training.but(model=model)
        if model == "vgg16_unet":
            vgg = dict(self.vgg16)
            frozen_throughout = vgg.pop("frozen_throughout", False)
            config = config.but(**vgg, encoder_weights=encoder_weights)
            frozen = (config.epochs if frozen_throughout else max(1, config.epochs // 5)) if encoder_weights else 0
            config = config.but(freeze_encoder_epochs=frozen)
        return config.but(**changes)


PROFILES = {
    "smoke": Profile("smoke", (640, 360), {"train": SyntheticSplit(24, 0, 0.4), "val": SyntheticSplit(8, 1, 0.5),
                                           "test": SyntheticSplit(8, 2, 0.5)},
                     published=False, square_size=64,
                     training=TrainConfig(epochs=1, base_filters=4, batch_size=8, tile_size=64, tiles_per_epoch=32,
                                          validate_every=1)),
    # The recipe of TrainConfig (docs/recipe.md) at 10,240 training tiles, sized for `make report` on
    # a 2-core CPU; the VGG16 encoder stays frozen and sees a quarter of the samples, without the hard
    # negatives (mining them means predicting good photos every epoch) and, with a part head, half the
    # training photos for it: its predictions take about 14 times a U-Net's. Validation and test parts are generated apart from the
    # training parts, with enough good parts that 5% of them is 8 and 15 parts.
    "default": Profile("default", (1280, 720), {"train": SyntheticSplit(600, 0, 0.4),
                                                "val": SyntheticSplit(270, 1, 0.62),
                                                "test": SyntheticSplit(425, 2, 0.74)},
                       published=True, vgg16={"epochs": 2, "frozen_throughout": True, "head_photos": 300,
                                              "hard_negative_share": 0.0}),
    # The earlier projects' model sizes for a GPU or Colab: 64 base filters, 30 epochs, 256-px tiles.
    "full": Profile("full", (1280, 720), {"train": SyntheticSplit(2000, 0, 0.4), "val": SyntheticSplit(270, 1, 0.62),
                                          "test": SyntheticSplit(425, 2, 0.74)},
                    published=True,
                    training=TrainConfig(epochs=30, base_filters=64, batch_size=8, learning_rate=1e-3,
                                         tile_size=256, tiles_per_epoch=0, validate_every=1)),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else ``$SCRATCH_PROFILE``, else ``default``."""
    name = (name or os.environ.get("SCRATCH_PROFILE") or "default").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def repo_root() -> Path | None:
    """The checkout this package was installed from (editable install), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir() else None


def data_root() -> Path:
    """Where generated data and prepared sets live (an ignored folder).

    ``$SCRATCH_DATA_DIR`` wins; inside a checkout it is ``<repo>/data``; elsewhere
    (a pip install in Colab) ``~/scratch_data``.
    """
    env = os.environ.get("SCRATCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    return root / "data" if root else Path.home() / "scratch_data"


def profile_dir(profile: Profile) -> Path:
    """Per-profile data folder, so a smoke run never touches the default run's data."""
    return data_root() / profile.name


@dataclass(frozen=True)
class Outputs:
    """Where a notebook writes: trained ``runs``, ``figures`` and ``results``."""
    runs: Path
    figures: Path
    results: Path


PUBLISH_ENV = "SCRATCH_PUBLISH"   # "1" while `make report` renders the committed course


def outputs(profile: Profile, source: str | os.PathLike | None = None) -> Outputs:
    """Where a profile's notebooks write. Only ``make report`` (which sets :data:`PUBLISH_ENV`)
    writes the repository's ``figures/`` and ``results/``, what the README shows, and only for
    the synthetic set of a published profile run from a checkout; a notebook opened by hand, an
    exercise, and photos of your own (``source``, ``<data>/<profile>/own-<folder>/``) write beside
    their data, so they never replace the committed results."""
    env = os.environ.get("SCRATCH_FIGURES_DIR")
    if source is not None:
        base = profile_dir(profile) / f"own-{Path(source).expanduser().name}"
        return Outputs(base / "runs", Path(env).expanduser() if env else base / "figures", base / "results")
    root = repo_root()
    published = profile.published and root is not None and os.environ.get(PUBLISH_ENV) == "1"
    return Outputs(profile_dir(profile) / "runs",
                   Path(env).expanduser() if env else root / "figures" if published else profile_dir(profile) / "figures",
                   root / "results" if published else profile_dir(profile) / "results")
