"""Whole fields: patches of blended sources across mosaics, bands and dithers, fitted on Dask.

- :func:`fit_field`: the field fit (``python -m pho.tools.fitfield``), returning the catalog.
- :class:`FieldExposure`: an exposure on disk (mosaic or single frame), read one cutout at a time.
- :class:`FieldSources`: the source list as columns.
- :class:`FieldSettings`: patch sizes, thresholds, passes, sampler.
- :func:`simulate_goodss_field`: a realistic simulated field from the real GOODS-S source list.

How it works: ``docs/fields.md``.
"""

from .driver import FieldSettings, connect, fit_field
from .mosaic import FieldExposure
from .simulate import simulate_goodss_field
from .sourcetable import FieldSources

__all__ = ["fit_field", "FieldExposure", "FieldSources", "FieldSettings", "simulate_goodss_field", "connect"]
