"""Helpers for the car-paint scratch segmentation course.

The notebooks in ``notebooks/`` tell the story; this package holds the reusable parts, one
small module per step of the pipeline (the README's layout section lists them all):
reading the sources (``sources``), opening photos (``photos``), masks (``masks``),
preparing (``preparation``), the synthetic set (``synthetic``), tiles and augmentation
(``pipeline``, ``augment``), models and losses (``models``, ``losses``), metrics
(``metrics``), training (``train``), prediction (``predict``), scoring (``evaluation``),
comparison (``compare``), figures and tables (``report``), the app (``serve``) and the
command line (``cli``).
"""

__version__ = "0.1.0"

QUALITY_GOOD = "양품"
QUALITY_DEFECTIVE = "불량품"
