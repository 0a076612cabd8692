"""Helpers for the car-paint scratch segmentation course.

The notebooks in ``notebooks/`` tell the story; this package holds the plumbing, one module per
concept: the sources and their labels (``sources``, ``labels``), photos (``photos``), masks
(``masks``), preparing (``preparation``) and the course's data (``dataset``), the synthetic set
(``synthetic``), the settings (``profiles``), tiles and augmentation (``pipeline``,
``augment``), models and losses (``models``, ``losses``), training (``train``) into run folders
(``runs``), the plant's decision (``decision``), prediction (``predict``), score formulas
(``metrics``) and scores (``evaluation``), the comparison (``compare``, ``reference``),
figures and tables (``figures``, ``tables``), the app (``serve``), the report and its notebooks
(``report``, ``notebooks``) and the command line (``cli``). See ``docs/layout.md``.
"""

__version__ = "0.2.0"

QUALITY_GOOD = "양품"
QUALITY_DEFECTIVE = "불량품"
