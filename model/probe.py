"""The probe: a small image run through a model when it is published or loaded, and what its output must look like.

A file whose contract does not match it (a 0..1 model read as 0..255, NCHW
read as NHWC, BGR fed RGB) runs without error and gives black, white or
off-colour images. :func:`judge_probe` compares the output of
:func:`probe_image` with its bicubic upscale and names what looks wrong;
``core.catalog.checks`` refuses such a file, the engine refuses to load a foreign
file (no srgan contract) that fails it.
"""

from __future__ import annotations

import numpy as np

from model.quality import bicubic_upscale

PROBE_HW = (20, 28)
"""Height and width of the image run through a model before it is published or a foreign file is loaded."""


def probe_image(h: int = PROBE_HW[0], w: int = PROBE_HW[1]) -> np.ndarray:
    """A smooth test image (HWC uint8): red grows to the right, green downwards, blue along the diagonal.

    Smooth, so that any super-resolution model's output is close to its
    bicubic upscale; the three channels differ, so that swapped channels show.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    red = 40 + 180 * x / max(w - 1, 1)
    green = 60 + 140 * y / max(h - 1, 1)
    blue = 220 - 160 * (x + y) / max(w + h - 2, 1)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).round().astype(np.uint8)


def judge_probe(out_hwc: np.ndarray, lr_hwc_u8: np.ndarray, scale: int) -> str | None:
    """What looks wrong with a model's output of :func:`probe_image` next to its bicubic upscale (None: fine).

    Lenient on purpose: a weak or odd model passes; refused are outputs no
    model of this image should give, the signs of a contract that does not
    match the file (0..1 models fed 0..255, BGR models fed RGB).
    """
    ref = bicubic_upscale(lr_hwc_u8, scale).astype(np.float32)
    out = np.clip(out_hwc.astype(np.float32), 0, 255)
    ref_max, out_max = float(ref.max()), float(out.max())
    if out_max < 0.1 * ref_max:
        return (f"the output is nearly black (brightest value {out_max:.2f} of 255, bicubic {ref_max:.0f}): the model "
                "probably gives 0..1 values; declare its value range (--value-range 0 1)")
    saturated = float(np.mean((out <= 0.5) | (out >= 254.5)))
    ref_saturated = float(np.mean((ref <= 0.5) | (ref >= 254.5)))
    if saturated > 0.9 and ref_saturated < 0.1:
        return (f"{saturated:.0%} of the output is clipped to 0 or 255 (bicubic: {ref_saturated:.0%}): the model "
                "probably takes 0..1 input; declare its value range (--value-range 0 1)")
    direct = float(np.mean(np.abs(out - ref)))
    swapped = float(np.mean(np.abs(out[..., ::-1] - ref)))
    if direct > 20 and swapped < 0.5 * direct:
        return (f"the colours look swapped: the output is {direct:.0f} levels from bicubic on average, {swapped:.0f} "
                "with red and blue exchanged: the model probably takes BGR")
    out_y, ref_y = out.mean(axis=2).ravel(), ref.mean(axis=2).ravel()
    if out_y.std() > 8 and ref_y.std() > 8:
        corr = float(np.corrcoef(out_y, ref_y)[0, 1])
        if corr < -0.2:
            return (f"the output is a negative of the image (brightness correlation {corr:.2f} with bicubic): the "
                    "model's value range is not the declared one")
    if direct > 100:
        means = ", ".join(f"{c} {o:.0f} vs {r:.0f}" for c, o, r in zip("RGB", out.mean((0, 1)), ref.mean((0, 1))))
        return f"the output is far from the image: {direct:.0f} levels from bicubic on average (channel means {means})"
    return None
