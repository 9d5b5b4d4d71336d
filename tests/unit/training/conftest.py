"""Shared builders for the training tests: tiny configurations and images made on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _write_images(
    folder: Path, count: int, size: tuple[int, int] = (64, 48), seed: int = 0, prefix: str = "img"
) -> list[Path]:
    """``count`` smooth random RGB PNGs of ``size`` (width, height) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{prefix}{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def _tiny_config(tmp_path: Path, data: Path, **overrides):
    """A pretraining config small enough for a test: 2 blocks, 8 filters, batch 2 of 32 px."""
    from training.config import Stage, default_config, merge

    base = {
        "run_dir": str(tmp_path / "run"),
        "steps": 4,
        "xla": False,
        "log_every": 1,
        "val_every": 2,
        "ckpt_every": 2,
        "samples": 1,
        "generator.blocks": 2,
        "generator.filters": 8,
        "data.data": str(data),
        "data.hr_size": 32,
        "data.batch_size": 2,
        "data.val_fraction": 0.25,
        "data.val_images": 2,
        "optim.warmup_steps": 0,
    }
    base.update(overrides)
    stage = cast(Stage, base.pop("stage", "pretrain"))
    return merge(default_config(stage), base)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    _write_images(folder / "a", 4, seed=1)
    _write_images(folder / "b", 4, size=(56, 40), seed=2)
    return folder


@pytest.fixture
def make_images():
    """``make_images(folder, count, size=(w, h), seed=0, prefix="img")`` writes smooth random PNGs."""
    return _write_images


@pytest.fixture
def make_config():
    """``make_config(tmp_path, data, **dotted_overrides)``: a tiny pretraining (or ``stage="gan"``) config."""
    return _tiny_config
