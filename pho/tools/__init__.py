"""Command-line tools: ``python -m pho.tools.NAME --help``."""
