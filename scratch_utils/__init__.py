"""Helpers for the car-paint scratch segmentation course.

The notebooks in ``notebooks/`` tell the story; this package holds the reusable parts, one
small module per step of the pipeline: reading the sources (``sources``, ``labels``),
opening photos (``photos``), masks (``masks``), preparing (``preparation``) and reading a
prepared folder (``prepared``), the synthetic set (``synthetic``), tiles and augmentation
(``pipeline``, ``augment``), models and losses (``models``, ``losses``), training (``train``,
``validation``, ``resume``) into run folders (``runs``), prediction (``predict``), score
formulas (``metrics``) and scores (``evaluation``), comparison (``compare``), figures
(``figures``) and tables (``tables``), the app (``serve``), the course runner
(``notebooks``) and the command line (``cli``).
"""

__version__ = "0.1.0"

QUALITY_GOOD = "양품"
QUALITY_DEFECTIVE = "불량품"
