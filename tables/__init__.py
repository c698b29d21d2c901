"""Precomputed lookup tables shipped with pho (installed as the package ``pho.tables``).

Read them only through the loaders in ``pho`` (for example ``pho.sersic``), never by path.
"""
