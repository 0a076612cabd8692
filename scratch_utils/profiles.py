"""Run profiles, the folders each one writes to, and the course's default dataset.

``smoke`` keeps every notebook to seconds (tests), ``default`` is the committed CPU
run, ``full`` uses the earlier projects' settings (GPU / Colab). The profile comes from the
``SCRATCH_PROFILE`` environment variable so that one notebook serves all three.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

PROFILE_NAMES = ("smoke", "default", "full")


@dataclass(frozen=True)
class Profile:
    name: str
    synth_count: int       # synthetic parts generated
    synth_width: int
    synth_height: int
    figures_are_published: bool  # write into the repo's figures/ (never for smoke)
    square_size: int = 128         # the 128-px squash, kept as the comparison's baseline
    epochs: int = 12               # training defaults for notebooks 03-05 and `train`
    base_filters: int = 16
    batch_size: int = 8
    learning_rate: float = 2e-3
    tile_size: int = 128           # training crops at the working scale
    tiles_per_epoch: int = 0       # 0: one per training photo
    defect_share: float = 0.9     # the recipe: most tiles centred on a defect (docs/recipe.md)
    validate_every: int = 1        # whole-photo validation every n epochs (and after the last)
    vgg_epochs: int = 0            # 0: as many as the other models
    vgg_frozen_throughout: bool = False  # CPU: keep the pretrained encoder frozen (a third of the cost)

    def as_dict(self) -> dict:
        return asdict(self)

    def training(self, model: str = "unet", encoder_weights: str | None = None) -> dict:
        """TrainConfig fields this profile sets for ``model``, the VGG16 warm-up rule included:
        a pretrained encoder is frozen for the first fifth of the epochs (or throughout on
        the CPU profile), a random one is never frozen."""
        values = {"epochs": self.epochs, "base_filters": self.base_filters,
                  "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                  "tile_size": self.tile_size, "tiles_per_epoch": self.tiles_per_epoch,
                  "defect_share": self.defect_share, "validate_every": self.validate_every}
        if model == "vgg16_unet":
            epochs = self.vgg_epochs or self.epochs
            frozen = 0
            if encoder_weights:
                frozen = epochs if self.vgg_frozen_throughout else max(1, epochs // 5)
            values.update(epochs=epochs, encoder_weights=encoder_weights,
                          freeze_encoder_epochs=frozen)
        return values


PROFILES = {
    "smoke": Profile("smoke", synth_count=30, synth_width=640, synth_height=360,
                     figures_are_published=False, square_size=64, epochs=1, base_filters=4,
                     tile_size=64, tiles_per_epoch=32),
    # The recipe chosen by benchmarks/bench_recipe.py on validation (docs/recipe.md): 90% of the
    # tiles centred on a defect, 8 epochs of 1,280 128-px tiles (10,240 samples, 4 times the
    # earlier budget: the learning curve still rose there) in batches of 4, 8 base filters,
    # validation photos scored at epochs 4 and 8. Sized for `make report` in under 45 minutes on
    # a 2-core CPU; the VGG16 encoder stays frozen and sees a quarter of the samples (its
    # predictions take about 14 times a U-Net's).
    "default": Profile("default", synth_count=600, synth_width=1280, synth_height=720,
                       figures_are_published=True, epochs=8, base_filters=8, batch_size=4,
                       tiles_per_epoch=1280, validate_every=4,
                       vgg_epochs=2, vgg_frozen_throughout=True),
    # The earlier projects' model sizes for a GPU or Colab: 64 base filters, 30 epochs, 256-px tiles.
    "full": Profile("full", synth_count=2000, synth_width=1280, synth_height=720,
                    figures_are_published=True, epochs=30, base_filters=64, learning_rate=1e-3,
                    tile_size=256, tiles_per_epoch=0),
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


def figures_dir(profile: Profile) -> Path:
    """The repo's ``figures/`` for published profiles, a scratch folder for smoke runs."""
    env = os.environ.get("SCRATCH_FIGURES_DIR")
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if profile.figures_are_published and root:
        return root / "figures"
    return profile_dir(profile) / "figures"


def results_dir(profile: Profile) -> Path:
    """The repo's ``results/`` for published profiles, a scratch folder for smoke runs."""
    root = repo_root()
    if profile.figures_are_published and root:
        return root / "results"
    return profile_dir(profile) / "results"

# ------------------------------------------------ the course's dataset: yours, or the synthetic one


def prepared_folder(profile, source: str | os.PathLike | None = None, square: int | None = None) -> Path:
    """Where a profile's prepared set lives: ``data/<profile>/prepared-scaled`` (or
    ``prepared-square128``) for the synthetic set, ``prepared-<folder name>-...`` for yours."""
    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    tag = f"square{square}" if square else "scaled"
    if source is None:
        return profile_dir(profile) / f"prepared-{tag}"
    return profile_dir(profile) / f"prepared-{Path(source).expanduser().name}-{tag}"


def ensure_prepared(profile=None, source: str | os.PathLike | None = None,
                    fmt: str = "auto", progress: bool = True, square: int | None = None) -> Path:
    """The prepared folder every notebook starts from, made if missing or out of date.

    With ``source=None`` the profile's synthetic AIHub-format set is generated first
    (``data/<profile>/synthetic``); with a folder of your own it is prepared instead, by
    the same code. The geometry is the automatic working scale, or with ``square=128`` the
    128-px squash (the baseline). Returns the folder (:func:`prepared_folder`), opened.
    """
    from . import synthetic
    from .preparation import prepare
    from .prepared import Prepared

    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    if source is None:
        source = profile_dir(profile) / "synthetic"
        synthetic.generate(source, count=profile.synth_count, seed=0,
                           width=profile.synth_width, height=profile.synth_height,
                           progress=progress)
        out = prepared_folder(profile, None, square)
    else:
        out = prepared_folder(profile, source, square)
    prepare(Path(source).expanduser(), out, fmt=fmt, size=square, progress=progress)
    return Prepared.open(out)
