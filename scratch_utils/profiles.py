"""Run profiles and the folders each one writes to.

``smoke`` keeps every notebook to seconds (tests), ``default`` is the committed CPU
run, ``full`` uses the seeds' settings (GPU / Colab). The profile comes from the
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
    image_size: int        # side of the square model input
    figures_are_published: bool  # write into the repo's figures/ (never for smoke)
    epochs: int = 12               # training defaults for notebooks 03-05 and `train`
    base_filters: int = 16
    batch_size: int = 8
    learning_rate: float = 2e-3

    def as_dict(self) -> dict:
        return asdict(self)

    def training(self) -> dict:
        """TrainConfig fields this profile sets."""
        return {"epochs": self.epochs, "base_filters": self.base_filters,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate}


PROFILES = {
    "smoke": Profile("smoke", synth_count=30, synth_width=640, synth_height=360,
                     image_size=64, figures_are_published=False, epochs=1, base_filters=8),
    # 96 px keeps `make report` under 30 minutes on a 2-core CPU; `full` uses the seeds' 128.
    "default": Profile("default", synth_count=600, synth_width=1280, synth_height=720,
                       image_size=96, figures_are_published=True, epochs=10),
    "full": Profile("full", synth_count=2000, synth_width=1280, synth_height=720,
                    image_size=128, figures_are_published=True, epochs=30, base_filters=64,
                    learning_rate=1e-3),
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
