"""Helpers for the car-paint scratch segmentation course.

The notebooks in ``notebooks/`` tell the story; this package holds the reusable
parts, one small module per job:

- ``profiles``  -- smoke / default / full settings and where data and figures go
- ``synthetic`` -- the embedded AIHub-format car-paint dataset (notebook 01)
- ``data``      -- preparation: AIHub / COCO / paired folders -> masks and splits (notebook 01)
- ``report``    -- one helper that writes every figure (all notebooks)
- ``notebooks`` -- run and normalise the notebooks (``make report``)
"""

__version__ = "0.1.0"

QUALITY_GOOD = "양품"
QUALITY_DEFECTIVE = "불량품"
