"""Where training and evaluation images come from (numpy and Pillow; no TensorFlow).

Two layouts:

- A DIV2K folder (the archives of https://data.vision.ee.ethz.ch/cvl/DIV2K/
  extracted side by side): HR in ``DIV2K_{subset}_HR/0001.png`` and the LR of
  each track read from disk (:func:`div2k_pairs`).
- Any folder of HR images, searched recursively: the LR of each image is
  made once with :func:`model.quality.bicubic_downscale`, the same
  degradation evaluation uses.

The hold-out split of a folder (:func:`split_holdout`) is a hash of each
file's relative path, so it does not change when files are added.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.quality import bicubic_downscale, crop_to_multiple

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

DIV2K_TRACKS = ("bicubic", "unknown", "mild", "difficult", "wild")
"""bicubic: x2, x3, x4, x8; unknown: x2, x3, x4; mild, difficult, wild: x4 (NTIRE 2018)."""


@dataclass(frozen=True)
class Pair:
    """One training image: its name, HR path and (for paired data) LR path."""

    name: str
    hr_path: Path
    lr_path: Path | None = None


@dataclass(frozen=True)
class Example:
    """A decoded image pair, uint8 HWC; ``hr`` is exactly ``scale`` times ``lr``."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, through symbolic links to folders), sorted.

    Following links lets a folder of links combine data sets (e.g. ``train/`` and
    ``train-extra/``) without copying them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder, followlinks=True):
        found.extend(Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p for p in found if p.is_file())


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def is_div2k(folder: Path) -> bool:
    return any(Path(folder).glob("DIV2K_*_HR"))


def div2k_pairs(root: Path, subset: str, scale: int, track: str = "bicubic") -> list[Pair]:
    """(LR, HR) file pairs of one DIV2K subset (``train`` or ``valid``) and track.

    Layouts: ``DIV2K_{subset}_LR_{bicubic|unknown}/X{s}/0001x{s}.png``;
    bicubic x8 in ``DIV2K_{subset}_LR_x8/0001x8.png``; ``mild``, ``difficult``
    and ``wild`` (x4 only) in ``DIV2K_{subset}_LR_{track}/0001x4{m|d|w*}.png``,
    wild with up to four degraded copies of each image. Each subset reads its
    own folders (the tutorial's loader swaps train and valid for x8).
    """
    if subset not in ("train", "valid"):
        raise ValueError(f"subset must be 'train' or 'valid', got {subset!r}")
    if track not in DIV2K_TRACKS:
        raise ValueError(f"track must be one of {DIV2K_TRACKS}, got {track!r}")
    allowed = {"bicubic": (2, 3, 4, 8), "unknown": (2, 3, 4)}.get(track, (4,))
    if scale not in allowed:
        raise ValueError(f"DIV2K track {track!r} has scales {allowed}, not x{scale}")
    root = Path(root)
    hr_dir = root / f"DIV2K_{subset}_HR"
    if not hr_dir.is_dir():
        raise FileNotFoundError(f"DIV2K HR folder missing: {hr_dir}")
    if track == "bicubic" and scale == 8:
        lr_dir, patterns = root / f"DIV2K_{subset}_LR_x8", ["{id}x8.png"]
    elif track in ("bicubic", "unknown"):
        lr_dir, patterns = root / f"DIV2K_{subset}_LR_{track}" / f"X{scale}", [f"{{id}}x{scale}.png"]
    else:
        lr_dir, patterns = root / f"DIV2K_{subset}_LR_{track}", [f"{{id}}x4{track[0]}*.png"]
    if not lr_dir.is_dir():
        raise FileNotFoundError(f"DIV2K LR folder missing for track {track} x{scale}: {lr_dir}")
    pairs = []
    for hr_path in sorted(hr_dir.glob("*.png")):
        image_id = hr_path.stem
        lr_paths = sorted(p for pattern in patterns for p in lr_dir.glob(pattern.format(id=image_id)))
        if not lr_paths:
            log.warning("DIV2K: no LR image for %s in %s; skipped", hr_path.name, lr_dir)
        pairs += [Pair(f"{subset}/{lr.stem}", hr_path, lr) for lr in lr_paths]
    if not pairs:
        raise FileNotFoundError(f"no DIV2K pairs in {root} for {subset} {track} x{scale}")
    return pairs


def folder_pairs(folder: Path) -> list[Pair]:
    """Every image of a plain folder, named by its path relative to the folder."""
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return [Pair(p.relative_to(folder).as_posix(), p) for p in paths]


def split_holdout(pairs: list[Pair], fraction: float) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): an image is held out when the hash of its name falls below ``fraction``.

    Copies of one HR image (DIV2K wild) stay on the same side. With a
    non-zero fraction and at least two images, one image at least is held out.
    """
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []

    def key(p: Pair) -> float:
        digest = hashlib.sha1(p.hr_path.name.encode() if p.lr_path else p.name.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    held = {id(p) for p in pairs if key(p) < fraction}
    if not held:
        lowest = min(pairs, key=key)
        held = {id(p) for p in pairs if key(p) == key(lowest)}
    if len(held) == len(pairs):
        raise ValueError(f"validation fraction {fraction} leaves no training image")
    return [p for p in pairs if id(p) not in held], [p for p in pairs if id(p) in held]


def decode_pair(pair: Pair, scale: int) -> Example:
    """Decode a pair; for an unpaired image, make its LR with the protocol's bicubic downscale.

    Paired HR is cropped to exactly ``scale`` times the LR size.
    """
    hr = read_rgb(pair.hr_path)
    if pair.lr_path is None:
        return Example(pair.name, bicubic_downscale(hr, scale), crop_to_multiple(hr, scale))
    lr = read_rgb(pair.lr_path)
    h, w = min(lr.shape[0], hr.shape[0] // scale), min(lr.shape[1], hr.shape[1] // scale)
    return Example(pair.name, lr[:h, :w], hr[: h * scale, : w * scale])


def centre_crop(example: Example, scale: int, max_side: int) -> Example:
    """The aligned centre of a pair, its HR at most ``max_side`` pixels a side."""
    lr_side = max(1, max_side // scale)
    h, w = example.lr.shape[:2]
    ch, cw = min(h, lr_side), min(w, lr_side)
    y, x = (h - ch) // 2, (w - cw) // 2
    lr = example.lr[y : y + ch, x : x + cw]
    hr = example.hr[y * scale : (y + ch) * scale, x * scale : (x + cw) * scale]
    return Example(example.name, lr, hr)


def decoded_bytes(pairs: list[Pair], scale: int) -> int:
    """Bytes the decoded HR and LR images of ``pairs`` take, read from the file headers."""
    total = 0.0
    for p in pairs:
        with Image.open(p.hr_path) as img:
            w, h = img.size
        total += 3 * w * h * (1 + 1 / scale**2)
    return int(total)


def combined_folder_pairs(data: Path, extra: list[Path]) -> list[Pair]:
    """The images of ``data`` and every ``extra`` folder, named relative to their folder, sorted by name.

    Sorting makes the set (and so the split and the crop stream) the same however the folders are given,
    e.g. ``train/`` plus ``train-extra/`` or one folder of links to both.
    """
    pairs = [p for folder in [data, *extra] for p in folder_pairs(folder)]
    seen: dict[str, Path] = {}
    for p in pairs:
        if p.name in seen:
            raise ValueError(f"two training images are both named {p.name}: {seen[p.name]} and {p.hr_path}")
        seen[p.name] = p.hr_path
    return sorted(pairs, key=lambda p: p.name)
