"""Where the shared image data lies: ``../shared/data`` beside the repository, or ``SRGAN_SHARED_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    root = Path(os.environ.get("SRGAN_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"shared image data not found at {root}; set SRGAN_SHARED_DATA")
    return root


def training_photo(index: int = 0) -> np.ndarray:
    """A real photo (BSD200 training image) as (H, W, 3) uint8."""
    files = sorted((shared_data() / "train" / "BSD200").glob("*.png"))
    return np.asarray(Image.open(files[index]).convert("RGB"))
