"""Where things live: the repository, the shared data sets and the shipped weights.

No machine-specific absolute paths: everything is relative to this package, or comes from the
``DIFFMF_DATA`` environment variable.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # diffmf_core (this file is diffmf_core/common/paths.py)
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEFAULT_PRESET = "live"


def repo_root() -> Path:
    """The checkout holding diffmf_core (only meaningful for a source checkout)."""
    return PACKAGE_DIR.parent


def shared_data_dir() -> Path | None:
    """The shared data folder (``$DIFFMF_DATA`` or ``<repo>/../shared/data``), or None if absent."""
    env = os.environ.get("DIFFMF_DATA")
    candidate = Path(env) if env else repo_root().parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def default_weights_path(preset: str = DEFAULT_PRESET) -> Path:
    """The weights file shipped for ``preset``."""
    return WEIGHTS_DIR / f"{preset}.safetensors"
