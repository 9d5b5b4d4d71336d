"""Image sources, the hold-out split, the DIV2K layout and the crop pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.quality import bicubic_downscale, crop_to_multiple

pytestmark = pytest.mark.train
ROOT = Path(__file__).resolve().parents[3]


def test_folder_lr_is_the_protocol_downscale(image_folder):
    from training.sources import decode_pair, folder_pairs, read_rgb

    pair = folder_pairs(image_folder)[0]
    ex = decode_pair(pair, 4)
    hr = read_rgb(pair.hr_path)
    assert np.array_equal(ex.hr, crop_to_multiple(hr, 4))
    assert np.array_equal(ex.lr, bicubic_downscale(hr, 4))


def test_holdout_split_is_stable_and_not_empty(tmp_path, make_images):
    from training.sources import folder_pairs, split_holdout

    make_images(tmp_path / "d", 20, size=(16, 16))
    train, val = split_holdout(folder_pairs(tmp_path / "d"), 0.2)
    assert val and train and len(train) + len(val) == 20
    make_images(tmp_path / "d", 5, size=(16, 16), prefix="more")  # adding files keeps earlier decisions
    train2, val2 = split_holdout(folder_pairs(tmp_path / "d"), 0.2)
    assert {p.name for p in val} <= {p.name for p in val2}
    assert not {p.name for p in val2} & {p.name for p in train2}


def _fake_div2k(root: Path) -> None:
    """A DIV2K tree with 3 train and 2 valid images and LR for several tracks."""
    for subset, ids in (("train", [1, 2, 3]), ("valid", [801, 802])):
        for i in ids:
            hr = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
            stem = f"{i:04d}"
            (root / f"DIV2K_{subset}_HR").mkdir(parents=True, exist_ok=True)
            Image.fromarray(hr).save(root / f"DIV2K_{subset}_HR" / f"{stem}.png")
            outputs = {
                f"DIV2K_{subset}_LR_bicubic/X2/{stem}x2.png": 2,
                f"DIV2K_{subset}_LR_bicubic/X4/{stem}x4.png": 4,
                f"DIV2K_{subset}_LR_unknown/X3/{stem}x3.png": 3,
                f"DIV2K_{subset}_LR_x8/{stem}x8.png": 8,
                f"DIV2K_{subset}_LR_mild/{stem}x4m.png": 4,
                f"DIV2K_{subset}_LR_difficult/{stem}x4d.png": 4,
                f"DIV2K_{subset}_LR_wild/{stem}x4w1.png": 4,
                f"DIV2K_{subset}_LR_wild/{stem}x4w2.png": 4,
            }
            for rel, s in outputs.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(bicubic_downscale(hr, s)).save(root / rel)


@pytest.mark.parametrize(
    ("track", "scale", "per_image"),
    [
        ("bicubic", 2, 1),
        ("bicubic", 4, 1),
        ("bicubic", 8, 1),
        ("unknown", 3, 1),
        ("mild", 4, 1),
        ("difficult", 4, 1),
        ("wild", 4, 2),
    ],
)
def test_div2k_pairs_every_track(tmp_path, track, scale, per_image):
    from training.sources import decode_pair, div2k_pairs

    _fake_div2k(tmp_path)
    train = div2k_pairs(tmp_path, "train", scale, track)
    valid = div2k_pairs(tmp_path, "valid", scale, track)
    assert len(train) == 3 * per_image and len(valid) == 2 * per_image
    # train reads train folders and valid reads valid folders (no x8 swap)
    assert all("DIV2K_train_" in str(p.lr_path) and "DIV2K_train_HR" in str(p.hr_path) for p in train)
    assert all("DIV2K_valid_" in str(p.lr_path) and p.hr_path.stem in ("0801", "0802") for p in valid)
    ex = decode_pair(train[0], scale)
    assert ex.hr.shape[0] == ex.lr.shape[0] * scale and ex.hr.shape[1] == ex.lr.shape[1] * scale


def test_div2k_rejects_unknown_combinations(tmp_path):
    from training.sources import div2k_pairs

    _fake_div2k(tmp_path)
    with pytest.raises(ValueError):
        div2k_pairs(tmp_path, "train", 8, "unknown")
    with pytest.raises(ValueError):
        div2k_pairs(tmp_path, "train", 2, "mild")


def test_div2k_training_data_uses_the_valid_subset(tmp_path):
    from training.config import DataConfig
    from training.data import load_training_data

    _fake_div2k(tmp_path)
    for cache in ("memory", "disk"):
        data = load_training_data(DataConfig(data=tmp_path, hr_size=32, cache=cache), 4)
        assert data.store.count == 3
        assert sorted(e.name for e in data.validation) == ["valid/0801x4", "valid/0802x4"]


def _block_store(scale: int = 4):
    """A store whose HR is its LR with each pixel repeated scale x scale: alignment is checkable."""
    from training.data import MemoryStore
    from training.sources import Example

    rng = np.random.default_rng(0)
    examples = []
    for h, w in ((20, 30), (16, 16)):
        seed = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        lr = np.asarray(Image.fromarray(seed).resize((w, h), Image.Resampling.BICUBIC))
        examples.append(Example(f"{h}x{w}", lr, np.repeat(np.repeat(lr, scale, 0), scale, 1)))
    return MemoryStore(examples)


@pytest.mark.parametrize("jpeg", [False, True])
def test_crops_are_aligned_after_flip_and_rotation(jpeg):
    from training.config import DataConfig
    from training.data import make_dataset

    cfg = DataConfig(hr_size=32, batch_size=8, jpeg_noise=jpeg, jpeg_prob=1.0)
    lr, hr = next(iter(make_dataset(_block_store(), cfg, 4, seed=3)))
    assert lr.shape == (8, 8, 8, 3) and hr.shape == (8, 32, 32, 3)
    lr, hr = lr.numpy(), hr.numpy()
    if jpeg:  # JPEG only touches the LR
        assert not np.array_equal(lr, hr[:, ::4, ::4])
        target = hr[:, ::4, ::4]
        aligned = np.abs(lr - target).mean()
        assert aligned < np.abs(lr - np.roll(target, 1, axis=0)).mean() / 2
    else:
        assert np.array_equal(hr, np.repeat(np.repeat(lr, 4, 1), 4, 2))


def test_rotation_is_exact_and_logs_no_onednn_error():
    """Every training run logged ``E0000 ... oneDNN supports DT_UINT8 only ...`` from a uint8 rot90."""
    code = textwrap.dedent("""
        import json
        import numpy as np, tensorflow as tf
        from training.augment import random_rotate
        img = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
        ds = tf.data.Dataset.range(8).map(lambda i: random_rotate(img, img, tf.stack([i, i])))
        turns = set()
        for lr, hr in ds:
            lr = lr.numpy()
            assert lr.dtype == np.uint8 and np.array_equal(lr, hr.numpy())
            turns.add(next(k for k in range(4) if np.array_equal(lr, np.rot90(img, k))))
        print(json.dumps(sorted(turns)))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # what the training entry point sets
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(json.loads(out.stdout.strip().splitlines()[-1])) > 1, "several turns were drawn"
    assert not re.search(r"^E\d{4} ", out.stderr, re.MULTILINE), out.stderr[-3000:]


def test_crop_stream_resumes_at_a_step():
    from training.config import DataConfig
    from training.data import make_dataset

    cfg = DataConfig(hr_size=32, batch_size=4)
    straight = make_dataset(_block_store(), cfg, 4, seed=7)
    batches = [b for _, b in zip(range(3), straight)]
    resumed = next(iter(make_dataset(_block_store(), cfg, 4, seed=7, start_step=2)))
    assert np.array_equal(resumed[1].numpy(), batches[2][1].numpy())
    assert not np.array_equal(batches[0][1].numpy(), batches[1][1].numpy())


def test_small_images_are_left_out(tmp_path, make_images):
    from training.config import DataConfig
    from training.data import load_training_data

    make_images(tmp_path / "d", 3, size=(64, 64))
    make_images(tmp_path / "d", 2, size=(20, 20), prefix="tiny")
    data = load_training_data(DataConfig(data=tmp_path / "d", hr_size=32, val_fraction=0), 4)
    assert data.store.count == 3 and data.validation == []


def test_realworld_crops_are_degraded_from_the_hr_crop_and_resume_exactly(image_folder):
    from training.config import DataConfig, DegradeConfig
    from training.data import load_training_data, make_dataset

    cfg = DataConfig(data=image_folder, hr_size=32, batch_size=2, val_fraction=0.25, degradation="realworld")
    data = load_training_data(cfg, 4, DegradeConfig())
    assert "realworld LR" in data.description
    val = data.validation[0]
    assert val.lr.shape[0] * 4 == val.hr.shape[0] and val.lr.shape[1] * 4 == val.hr.shape[1]
    assert not np.array_equal(val.lr, bicubic_downscale(val.hr, 4))  # degraded, not the protocol's LR
    again = load_training_data(cfg, 4, DegradeConfig())
    assert np.array_equal(again.validation[0].lr, val.lr)  # fixed seeds: the same validation set every run

    batches = iter(make_dataset(data.store, cfg, 4, seed=3))
    first, _, third = next(batches), next(batches), next(batches)
    lr, hr = (np.asarray(t) for t in first)
    assert lr.shape == (2, 8, 8, 3) and hr.shape == (2, 32, 32, 3)
    clean = np.stack([bicubic_downscale(h.astype(np.uint8), 4) for h in hr])
    assert np.abs(lr - clean).mean() > 1.0
    resumed = next(iter(make_dataset(data.store, cfg, 4, seed=3, start_step=2)))
    assert np.array_equal(np.asarray(resumed[0]), np.asarray(third[0]))
    assert np.array_equal(np.asarray(resumed[1]), np.asarray(third[1]))
    other = next(iter(make_dataset(data.store, cfg, 4, seed=4)))
    assert not np.array_equal(np.asarray(other[0]), lr)
