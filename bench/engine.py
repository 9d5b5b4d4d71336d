"""Engine benchmark: precisions, tiling cost, seams, memory; optionally backends against the matmul ceiling.

Run from the repository root: ``srgan bench engine [--model FILE.onnx] [--quick]``.
Everything is measured in one run on one machine, so the ratios are
comparable even when absolute numbers drift; each timing is the median of
``--repeat`` runs, and the runs being compared alternate (A B A B ...) so a
load that comes and goes (a training run on the same cores) hits both alike.

Prints at the defaults (the settings' backend, tile, overlap, precision):
- the CPU model and its flags that matter (AVX512, AVX512-BF16, AMX-BF16/INT8, VNNI), OpenVINO's
  capabilities, the load average beside every timing, and which precision ``auto`` chose (and why);
- per precision (``--precisions``, default f32, bf16, int8, auto; each engine built in a fresh compile
  cache, so int8's build time includes its quantization and auto's its checks): build seconds,
  throughput ratio to float32 and to bf16 (whole ``--precision-size`` image, runs alternating), RGB PSNR
  against float32, and on Set5 and Set14 (``--set5``/``--set14``, measurement only) the mean Y-PSNR, its
  cost against float32 and the cost on the worst image;
- tiled (defaults) vs whole-image throughput and seam PSNR on a ``--size`` input;
- peak RSS of a fresh process upscaling a 2048x2048 input at the defaults.

With ``--candidates compact:64:16,span:48:6:bicubic_edge,...`` (``arch:filters:blocks[:global_skip]``) or
trained files (``--candidates model/weights/compact_x4.onnx``), instead: the fast-tier table. A spec is built
untrained (``training.arch.build_generator``, x4, the ``bicubic`` skip unless another is named, weights made
non-zero) and exported (``training.export.keras_to_onnx``); a file is run as it is. Every network, the
reference (``--model``, default the shipped srresnet_x4) first, is timed on a whole ``--precision-size`` image
at each of ``--precisions``, all alternating in one run: FLOPs per input pixel read off its graph
(``model.graph.flops_per_input_pixel``), seconds per output megapixel, throughput and FLOPs against the
reference at the same precision, and for the reference and each trained file (unless ``--quick``) the mean
Y-PSNR on Set5 and Set14 and its difference to the reference's; then issue 23's fast-tier criteria as PASS/FAIL
per trained file and precision (``FAST_TIER``). An untrained shape is timed only: its quality needs it trained
(docs/training.md, "The fast tier: compact").

With ``--backends onnxruntime,openvino``, also per backend:
- output megapixels/s and achieved GFLOP/s of the engine (SRResNet x4 does
  about 4.44 MFLOP per input pixel) on a 512x512 input, whole and tiled;
- numpy float32 matmul GFLOP/s (the ceiling) and the ratio;
- tiled (default settings) vs whole-image throughput;
- seam PSNR, tiled vs whole;
- peak RSS of a fresh process upscaling a 2048x2048 input at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

from bench.data import training_photo
from bench.tiny_models import make_srresnet_model
from core.catalog.load import open_engine
from core.catalog.shipped import WEIGHTS_DIR
from core.settings import Settings
from model.backends import cpu_flags, cpu_model, open_backend, openvino_available, openvino_capabilities
from model.contract import ModelContract
from model.engine import Upscaler
from model.engine import rgb_psnr as psnr
from model.graph import flops_per_input_pixel
from model.quality import bicubic_downscale, crop_to_multiple, psnr_y


def srresnet_flops_per_input_pixel(scale: int = 4, blocks: int = 16, filters: int = 64) -> float:
    """Multiply-adds x 2 of the SRResNet generator per low-resolution pixel."""
    conv = lambda k, cin, cout: 2.0 * k * k * cin * cout  # noqa: E731
    flops = conv(9, 3, filters) + blocks * 2 * conv(3, filters, filters) + conv(3, filters, filters)
    area = 1
    for _ in range(scale.bit_length() - 1):
        flops += area * conv(3, filters, 4 * filters)
        area *= 4
    return flops + area * conv(9, filters, 3)


def matmul_gflops(n: int = 2048, repeat: int = 7) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm-up: first call builds kernels and shapes
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def test_image(size: int) -> np.ndarray:
    """A photo-like input: a real training photo tiled up to ``size``, else smooth noise."""
    try:
        photo = training_photo(0)
        reps = (size // photo.shape[0] + 1, size // photo.shape[1] + 1, 1)
        return np.ascontiguousarray(np.tile(photo, reps)[:size, :size])
    except (FileNotFoundError, ImportError):
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        return np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:size, :size])


def peak_rss_child(model: Path, backend: str, size: int, tile: int | str, overlap: int,
                   precision: str = "f32") -> float:
    """Peak RSS in GB (VmHWM) of a fresh process that upscales a size x size input."""
    code = (
        "import resource, numpy as np\n"
        "from bench.engine import test_image\n"
        "from model.engine import Upscaler\n"
        f"up = Upscaler.from_file({str(model)!r}, backend={backend!r}, tile={tile!r}, overlap={overlap}, "
        f"precision={precision!r})\n"
        f"out = up.upscale(test_image({size}))\n"
        # VmHWM, not ru_maxrss: the latter carries the parent's peak over fork and exec
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024**2


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bench"
PRECISION_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16", "amx_int8",
                   "avx512_vnni", "avx_vnni")


def cpu_report() -> dict:
    flags = cpu_flags()
    return {"cpu": cpu_model(), "flags": {f: f in flags for f in PRECISION_FLAGS},
            "openvino_capabilities": openvino_capabilities()}


def alternate(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """Median seconds and last output of each function, run in turns (one warm-up each first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for k, fn in fns.items():
        outs[k] = fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), outs[k]) for k, v in times.items()}


def set_psnr(up: Upscaler, data: Path) -> dict[str, float] | None:
    """Y-PSNR (border of ``scale`` cropped) of ``up`` on each image under ``data``, by file stem; None without
    them."""
    paths = sorted(p for p in data.glob("*.png")) if data.is_dir() else []
    if not paths:
        return None
    values = {}
    for path in paths:
        hr = crop_to_multiple(np.asarray(Image.open(path).convert("RGB")), up.scale)
        values[path.stem] = psnr_y(up.upscale(bicubic_downscale(hr, up.scale), tile=0), hr, crop=up.scale)
    return values


def load_average() -> float:
    """The 1-minute load average (printed beside every timing: a training run on the same cores shows here)."""
    return round(os.getloadavg()[0], 2)


def bench_defaults(model: Path, args) -> dict:
    """The report at the settings' defaults: precisions, auto's choice, tiling, 2048x2048 memory."""
    d = Settings()
    with tempfile.TemporaryDirectory(prefix="srgan-bench-cache-") as cache:
        report = _bench_defaults(model, args, d, Settings(cache_dir=Path(cache), compile_cache=True))
    return report


def _bench_defaults(model: Path, args, d: Settings, fresh: Settings) -> dict:
    """:func:`bench_defaults` with ``fresh``'s empty compile cache: int8 quantized and auto decided in this run."""
    backend = args.backend or d.backend
    t, load = time.perf_counter(), load_average()
    auto = open_engine(fresh, model, backend=backend, precision="auto")
    auto_s = time.perf_counter() - t
    report: dict = {**cpu_report(), "backend": auto.backend_name, "auto": auto.precision,
                    "auto_note": auto.precision_note, "auto_build_s": round(auto_s, 2), "auto_build_load": load,
                    "defaults": {"tile": d.tile, "overlap": d.overlap, "tile_batch": d.tile_batch,
                                 "precision": d.precision}}
    engines: dict[str, Upscaler] = {}
    built: dict[str, tuple[float, float]] = {}
    for precision in args.precisions.split(","):
        if precision == "auto":
            engines["auto"] = Upscaler(auto.backend, auto.contract, tile=0, reload=auto.reload,
                                       precision_note=auto.precision_note)
            built["auto"] = (auto_s, load)
            continue
        try:
            t, load = time.perf_counter(), load_average()
            engines[precision] = open_engine(fresh, model, backend=backend, precision=precision, tile=0)
            built[precision] = (time.perf_counter() - t, load)
        except Exception as exc:  # noqa: BLE001 - reported
            report.setdefault("errors", {})[precision] = str(exc)
    small = test_image(args.precision_size)
    load_before = load_average()
    runs = alternate({p: partial(e.upscale, small, tile=0) for p, e in engines.items()}, args.repeat)
    report["precision_load_before_after"] = [load_before, load_average()]
    f32_s, f32_out = runs.get("f32", (None, None))
    bf16_s = runs["bf16"][0] if "bf16" in runs else None
    sets = {"Set5": DATA / "Set5" if args.set5 is None else args.set5,
            "Set14": DATA / "Set14" if args.set14 is None else args.set14}
    f32_sets = {k: set_psnr(engines["f32"], v) for k, v in sets.items()} if "f32" in engines and not args.quick \
        else {}
    rows = []
    for p, (secs, out) in runs.items():
        e = engines[p]
        row: dict[str, Any] = {"asked": p, "runs": e.precision, "build_s": round(built[p][0], 2),
                               "build_load": built[p][1], "seconds": round(secs, 3)}
        if f32_s and f32_out is not None:
            row["throughput_vs_f32"] = round(f32_s / secs, 3)
            row["psnr_vs_f32_db"] = round(psnr(out, f32_out), 2)
        if bf16_s:
            row["throughput_vs_bf16"] = round(bf16_s / secs, 3)
        for name, ref in f32_sets.items():
            got = ref if p == "f32" else set_psnr(e, sets[name])
            if ref is None or got is None:
                continue
            cost = {k: ref[k] - got[k] for k in ref}
            worst = max(cost, key=lambda k: cost[k])
            key = name.lower()
            row[f"{key}_psnr_y"] = round(float(np.mean(list(got.values()))), 4)
            row[f"{key}_cost_db"] = round(float(np.mean(list(cost.values()))), 4)
            row[f"{key}_worst_cost_db"] = round(cost[worst], 4)
            row[f"{key}_worst_image"] = worst
        row["load"] = load_average()
        rows.append(row)
    report["precisions"] = rows
    report["precision_input"] = f"{args.precision_size}x{args.precision_size}, whole image"

    img = test_image(args.size)
    tile_used = auto.tile_for(args.size, args.size)
    tiling = alternate({"whole": lambda: auto.upscale(img, tile=0), "tiled": lambda: auto.upscale(img)}, args.repeat)
    report["tiling"] = {"input": f"{args.size}x{args.size}", "tile": tile_used, "overlap": d.overlap,
                        "precision": auto.precision,
                        "tiled_vs_whole": round(tiling["whole"][0] / tiling["tiled"][0], 3),
                        "seam_psnr_db": round(psnr(tiling["tiled"][1], tiling["whole"][1]), 2)}
    if not args.quick:
        report["tiling"]["tile_2048"] = auto.tile_for(2048, 2048)
        report["tiling"]["peak_rss_gb_2048"] = round(peak_rss_child(model, backend, 2048, d.tile, d.overlap,
                                                                    d.precision), 2)
    return report


def bench_rewrite(model: Path, backend: str, precisions: list[str], size: int, repeat: int) -> list[dict]:
    """Per precision, the file as it is and its exact rewrite (``model.graph``), all in one alternation on a
    whole ``size`` image: seconds, speed-up of the rewrite, throughput against the float32 file (the engine
    before the rewrite and ``auto``), and the largest difference between file and rewrite (0..255)."""
    img = test_image(size)
    engines: dict[str, Upscaler] = {}
    for precision in precisions:
        for rewrite in (False, True):
            b = open_backend(model, backend=backend, precision=precision, rewrite=rewrite)
            contract = ModelContract.from_metadata(b.metadata) or ModelContract(scale=4, input_name=b.input_name)
            engines[f"{precision}/{'rewritten' if rewrite else 'file'}"] = Upscaler(b, contract, tile=0)
    runs = alternate({k: partial(e._run, [img]) for k, e in engines.items()}, repeat)
    base = runs["f32/file"][0] if "f32/file" in runs else None
    rows = []
    for precision in precisions:
        (t_file, out_file), (t_new, out_new) = runs[f"{precision}/file"], runs[f"{precision}/rewritten"]
        diff = float(np.abs(np.asarray(out_new) - np.asarray(out_file)).max())
        row = {"precision": engines[f"{precision}/file"].precision, "file_s": round(t_file, 3),
               "rewritten_s": round(t_new, 3), "speedup": round(t_file / t_new, 3), "max_abs_diff": round(diff, 5)}
        if base:
            row["file_vs_f32_file"] = round(base / t_file, 3)
            row["rewritten_vs_f32_file"] = round(base / t_new, 3)
        rows.append(row)
    return rows


def bench_backend(model: Path, backend: str, args, ceiling: float, flops_px: float) -> dict:
    d = Settings()
    img = test_image(args.size)
    px = img.shape[0] * img.shape[1]
    up = open_engine(d, model, backend=backend)
    t_whole, whole = timed(lambda: up.upscale(img, tile=0), args.repeat)
    t_tiled, tiled = timed(lambda: up.upscale(img), args.repeat)
    row = {
        "backend": up.backend_name,
        "tile": up.tile_for(img.shape[0], img.shape[1]),
        "overlap": d.overlap,
        "whole_s": round(t_whole, 3),
        "tiled_s": round(t_tiled, 3),
        "whole_gflops": round(px * flops_px / t_whole / 1e9, 1),
        "tiled_gflops": round(px * flops_px / t_tiled / 1e9, 1),
        "tiled_out_mpx_per_s": round(px * up.scale**2 / t_tiled / 1e6, 3),
        "tiled_vs_whole": round(t_whole / t_tiled, 3),
        "seam_psnr_db": round(psnr(tiled, whole), 2),
    }
    row["engine_vs_matmul"] = round(row["tiled_gflops"] / ceiling, 3)
    for tile, overlap, batch in args.variants:
        variant = Upscaler(up.backend, up.contract, tile=tile, overlap=overlap, tile_batch=batch)
        t, out = timed(partial(variant.upscale, img), args.repeat)
        row[f"tiled_{tile}_{overlap}_b{batch}_vs_whole"] = round(t_whole / t, 3)
        row[f"tiled_{tile}_{overlap}_b{batch}_seam_psnr_db"] = round(psnr(out, whole), 2)
    if not args.quick:
        for tile, overlap in [(d.tile, d.overlap), *args.rss_variants]:
            row[f"peak_rss_gb_2048_{tile}_{overlap}"] = round(peak_rss_child(model, backend, 2048, tile, overlap), 2)
    return row


SWEEP_TILES = (0, 128, 192, 256, 320)
"""The fixed tiles ``--tile-sweep`` times against the whole image (0)."""


def tile_sweep(model: Path, backend: str, precisions: list[str], shapes: list[tuple[int, int]],
               repeat: int) -> list[dict]:
    """Per precision and ``height x width`` input: seconds of the whole image, whole/tiled for each of
    :data:`SWEEP_TILES` (above 1: the tiles are faster), their seam PSNR against the whole image, and the plan
    ``tile=auto`` makes. What ``model.backends.CACHE_WINDOW_PIXELS`` was chosen by."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="srgan-bench-cache-") as cache:
        for precision in precisions:
            up = Upscaler.from_file(model, backend=backend, precision=precision, cache_dir=Path(cache), overlap=8)
            for h, w in shapes:
                img = test_image(max(h, w))[:h, :w]
                fns: dict[str, Callable[[], Any]] = {str(t): partial(up.upscale, img, tile=t) for t in SWEEP_TILES
                                                     if t == 0 or t < max(h, w)}
                load = load_average()
                runs = alternate(fns, repeat)
                whole, whole_out = runs.pop("0")
                rows.append({"backend": up.backend_name, "precision": up.precision, "input": f"{w}x{h}",
                             "whole_s": round(whole, 3), "auto_plan": up.tile_for(h, w),
                             "whole_vs_tiled": {t: round(whole / s, 3) for t, (s, _) in runs.items()},
                             "seam_psnr_db": {t: round(psnr(out, whole_out), 1) for t, (_, out) in runs.items()},
                             "load_before_after": [load, load_average()]})
    return rows


def candidate_model(spec: str, path: Path, scale: int = 4) -> Path:
    """A candidate of ``--candidates``: an ONNX file (a trained network, e.g. ``model/weights/compact_x4.onnx``)
    as it is, or ``arch:filters:blocks[:global_skip]`` as an untrained ONNX generator at ``path``
    (``training.export.export_untrained``)."""
    if spec.endswith(".onnx"):
        file = Path(spec)
        if not file.is_file():
            raise FileNotFoundError(f"--candidates: no such ONNX file: {spec}")
        return file
    from training.export import export_untrained  # optional: the train extra (TensorFlow)

    return export_untrained(spec, path, scale)


FAST_TIER = {"flops_vs_reference": 0.3, "psnr_within_db": 0.3, "throughput_vs_reference": 3.0}
"""Issue 23's fast tier against ``srresnet_x4``: at most this share of its FLOPs per pixel, Y-PSNR on Set5 and
Set14 within this much of it, at least this throughput at the same precision."""


def fast_tier_verdicts(rows: list[dict]) -> list[str]:
    """Issue 23's fast-tier criteria, one line each, for every trained candidate at every precision it ran: FLOPs,
    throughput at the same precision, Y-PSNR within :data:`FAST_TIER` of the reference on Set5 and Set14. PASS
    needs all of them measured; a set not measured (``--quick``, no folder) makes it INCOMPLETE, not PASS."""
    lines = []
    for r in rows:
        if r["model_kind"] != "trained":
            continue
        checks: list[tuple[str, bool | None]] = [
            (f"FLOPs {r['flops_vs_reference']:.3f}x", r["flops_vs_reference"] <= FAST_TIER["flops_vs_reference"]),
            (f"{r['throughput_vs_reference']:.2f}x its throughput",
             r["throughput_vs_reference"] >= FAST_TIER["throughput_vs_reference"])]
        quality: list[tuple[str, bool | None]] = []
        for name in ("set5", "set14"):
            if f"{name}_vs_reference_db" in r:
                diff = r[f"{name}_vs_reference_db"]
                quality.append((f"{name.capitalize()} {diff:+.2f} dB", diff >= -FAST_TIER["psnr_within_db"]))
            else:  # --quick, or no such folder: the quality bound is not shown to hold
                quality.append((f"{name.capitalize()} not measured", None))
        checks = [*checks, *quality]
        verdict = ("FAIL" if any(ok is False for _, ok in checks) else
                   "INCOMPLETE" if any(ok is None for _, ok in checks) else "PASS")
        lines.append(f"{verdict} {r['model']} at {r['asked']} (runs {r['runs']}): "
                     + ", ".join(text if ok is None else f"{text} {'ok' if ok else 'no'}" for text, ok in checks)
                     + f" (asked: <= {FAST_TIER['flops_vs_reference']}x FLOPs, >= "
                       f"{FAST_TIER['throughput_vs_reference']}x throughput, within {FAST_TIER['psnr_within_db']} dB)")
    return lines


def bench_candidates(reference: Path, specs: list[str], args: argparse.Namespace, tmp: Path) -> dict:
    """The fast-tier table (see the module): one row per network and precision (``--precisions``; a precision an
    engine cannot run is reported, not fatal), with Set5/Set14 Y-PSNR for the reference and each trained
    candidate unless ``--quick``."""
    d = Settings()
    backend = args.backend or d.backend
    models = {"reference": reference, **{s: candidate_model(s, tmp / f"{s.replace(':', '_')}.onnx") for s in specs}}
    precisions = [p for p in args.precisions.split(",") if p]
    engines, errors = {}, {}
    for name, path in models.items():
        for p in precisions:
            try:
                engines[f"{name}/{p}"] = open_engine(d, path, backend=backend, precision=p, tile=0)
            except Exception as exc:  # noqa: BLE001 - reported beside the table
                errors[f"{name}/{p}"] = str(exc)
    img = test_image(args.precision_size)
    out_mpx = img.shape[0] * img.shape[1] * 16 / 1e6
    load_before = os.getloadavg()
    runs = alternate({key: partial(e.upscale, img, tile=0) for key, e in engines.items()}, args.repeat)
    load_after = os.getloadavg()
    flops = {name: flops_per_input_pixel(onnx.load(str(path))) for name, path in models.items()}
    sets = {"set5": DATA / "Set5" if args.set5 is None else args.set5,
            "set14": DATA / "Set14" if args.set14 is None else args.set14}
    measured = {"reference", *(s for s in specs if s.endswith(".onnx"))}  # the trained ones (keys: name/precision)
    quality = {key: {k: set_psnr(e, v) for k, v in sets.items()} for key, e in engines.items()
               if not args.quick and key.rpartition("/")[0] in measured}
    rows = []
    for key, (secs, _) in runs.items():
        name, _, p = key.rpartition("/")
        if f"reference/{p}" not in runs:
            continue
        ref = runs[f"reference/{p}"][0]
        row = {"model": reference.stem if name == "reference" else Path(name).stem if name.endswith(".onnx") else name,
               "model_kind": "reference" if name == "reference" else "trained" if name.endswith(".onnx")
               else "untrained", "asked": p, "runs": engines[key].precision,
               "mflop_per_input_px": round(flops[name] / 1e6, 3),
               "flops_vs_reference": round(flops[name] / flops["reference"], 3),
               "s_per_output_mpx": round(secs / out_mpx, 3), "throughput_vs_reference": round(ref / secs, 2)}
        for set_name, got in quality.get(key, {}).items():
            base = quality.get(f"reference/{p}", {}).get(set_name)
            if got is None or base is None:
                continue
            mean, base_mean = float(np.mean(list(got.values()))), float(np.mean(list(base.values())))
            row[f"{set_name}_psnr_y"] = round(mean, 3)
            row[f"{set_name}_vs_reference_db"] = round(mean - base_mean, 3)
        rows.append(row)
    return {"cpu": cpu_model(), "flags": cpu_report()["flags"], "backend": next(iter(engines.values())).backend_name,
            "input": f"{args.precision_size}x{args.precision_size}, whole",
            "repeat": args.repeat, "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "cpus": os.cpu_count(), "rows": rows, "errors": errors, "verdicts": fast_tier_verdicts(rows)}


def _print_candidates(report: dict) -> None:
    print(f"CPU: {report['cpu']} ({report['cpus']} CPUs); "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["flags"].items()))
    print(f"backend {report['backend']}; input {report['input']}; median of {report['repeat']}, all networks "
          "alternating")
    print(f"load average (1 min) before/after: {report['load_average_before_after']}")
    print(f"  {'model':26s} {'asked':5s} {'runs':5s} {'MFLOP/px':>9s} {'FLOPs vs ref':>13s} {'s/output MP':>12s} "
          f"{'speed vs ref':>13s} {'Set5 Y-PSNR':>12s} {'vs ref':>7s} {'Set14 Y-PSNR':>13s} {'vs ref':>7s}")
    for r in report["rows"]:
        print(f"  {r['model']:26s} {r['asked']:5s} {r['runs']:5s} {r['mflop_per_input_px']:9.3f} "
              f"{r['flops_vs_reference']:13.3f} {r['s_per_output_mpx']:12.3f} {r['throughput_vs_reference']:13.2f} "
              f"{r.get('set5_psnr_y', '-'):>12} {r.get('set5_vs_reference_db', '-'):>7} "
              f"{r.get('set14_psnr_y', '-'):>13} {r.get('set14_vs_reference_db', '-'):>7}")
    for key, err in report["errors"].items():
        print(f"  {key}: not run: {err}")
    for line in report["verdicts"]:
        print(line)


def _variant(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.split(":")]
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 1)


def run(args: argparse.Namespace) -> int:
    """``srgan bench engine`` (arguments: ``cli/bench.py``)."""
    args.variants = [_variant(v) for v in args.variants.split(",") if v]
    args.rss_variants = [tuple(int(x) for x in v.split(":")) for v in args.rss_variants.split(",") if v]
    with tempfile.TemporaryDirectory() as tmp:
        shipped = WEIGHTS_DIR / "srresnet_x4.onnx"
        model = args.model or (shipped if shipped.is_file() else None)
        if model is None:
            model = make_srresnet_model(Path(tmp) / "srresnet_x4.onnx", scale=4)
        if args.candidates:
            table = bench_candidates(model, [c for c in args.candidates.split(",") if c], args, Path(tmp))
            if args.json:
                print(json.dumps(table, indent=2))
            else:
                _print_candidates(table)
            return 0
        if args.tile_sweep:
            sizes = [[int(x) for x in s.split("x")] for s in args.tile_sweep.split(",") if s]
            cpu = cpu_report()
            print(f"CPU: {cpu['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items()))
            sweep = tile_sweep(model, args.backend or Settings().backend, args.precisions.split(","),
                               [(h, w) for w, h in sizes], args.repeat)
            for r in sweep:
                print(json.dumps(r) if args.json else
                      f"{r['backend']} {r['precision']} {r['input']}: whole {r['whole_s']:.2f} s; whole/tiled by tile "
                      f"{r['whole_vs_tiled']}; seam dB {r['seam_psnr_db']}; auto's plan {r['auto_plan']}; load "
                      f"{r['load_before_after']}")
            return 0
        flops_px = srresnet_flops_per_input_pixel()
        load_before = os.getloadavg()
        ceiling = matmul_gflops()
        defaults = bench_defaults(model, args)
        if args.rewrite:
            defaults["rewrite"] = bench_rewrite(model, args.backend or Settings().backend,
                                                [p for p in args.rewrite.split(",") if p],
                                                args.precision_size, args.repeat)
        rows = []
        for backend in [b for b in args.backends.split(",") if b]:
            if backend == "openvino" and not openvino_available():
                print("openvino is not installed; skipped (pip install '.[openvino]')", file=sys.stderr)
                continue
            rows.append(bench_backend(model, backend, args, ceiling, flops_px))
        ceiling_after = matmul_gflops()
        load_after = os.getloadavg()
    report = {
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "input": f"{args.size}x{args.size}",
        "flops_per_input_pixel": flops_px,
        "matmul_gflops_before_after": [round(ceiling, 1), round(ceiling_after, 1)],
        "peak_rss_gb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "defaults": defaults,
        "backends": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CPU: {defaults['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in defaults["flags"].items()))
    print(f"OpenVINO capabilities: {', '.join(defaults['openvino_capabilities']) or '-'}")
    print(f"numpy float32 matmul: {ceiling:.1f} GFLOP/s (after: {ceiling_after:.1f}); the ratios below are "
          "measured within this run, runs alternating")
    print(f"load average (1 min) before/after: {report['load_average_before_after']} on {os.cpu_count()} CPUs")
    print(f"backend {defaults['backend']}; defaults {defaults['defaults']}")
    print(f"auto chose: {defaults['auto']} ({defaults['auto_note']}; built in {defaults['auto_build_s']} s, "
          f"load {defaults['auto_build_load']})")
    print(f"\nprecisions ({defaults['precision_input']}; load before/after the timings "
          f"{defaults['precision_load_before_after']}; cost: f32's Y-PSNR minus this one's, mean and worst image):")
    print(f"  {'asked':6s} {'runs':5s} {'build s':>8s} {'seconds':>8s} {'vs f32':>7s} {'vs bf16':>7s} "
          f"{'PSNR vs f32':>12s} {'Set5 Y-PSNR':>12s} {'cost':>7s} {'worst':>7s} {'Set14 Y-PSNR':>13s} {'cost':>7s} "
          f"{'worst':>7s} {'load':>5s}")
    for r in defaults["precisions"]:
        print(f"  {r['asked']:6s} {r['runs']:5s} {r['build_s']:8.2f} {r['seconds']:8.2f} "
              f"{r.get('throughput_vs_f32', '-'):>7} {r.get('throughput_vs_bf16', '-'):>7} "
              f"{r.get('psnr_vs_f32_db', '-'):>12} {r.get('set5_psnr_y', '-'):>12} {r.get('set5_cost_db', '-'):>7} "
              f"{r.get('set5_worst_cost_db', '-'):>7} {r.get('set14_psnr_y', '-'):>13} "
              f"{r.get('set14_cost_db', '-'):>7} {r.get('set14_worst_cost_db', '-'):>7} {r['load']:>5}")
    for p, err in defaults.get("errors", {}).items():
        print(f"  {p}: not run: {err}")
    for r in defaults.get("rewrite", []):
        print(f"  graph rewrite at {r['precision']}: file {r['file_s']:.2f} s, rewritten {r['rewritten_s']:.2f} s, "
              f"speed-up {r['speedup']}, largest difference {r['max_abs_diff']} (0..255); against the f32 file: "
              f"file {r.get('file_vs_f32_file', '-')}, rewritten {r.get('rewritten_vs_f32_file', '-')}")
    t = defaults["tiling"]
    print(f"\ntiling at the defaults ({t['input']}, tile {t['tile']}, overlap {t['overlap']}, {t['precision']}): "
          f"tiled/whole {t['tiled_vs_whole']}, seam PSNR {t['seam_psnr_db']} dB")
    if "peak_rss_gb_2048" in t:
        print(f"2048x2048 at the defaults (tile {t['tile_2048']}): peak RSS {t['peak_rss_gb_2048']} GB")
    if rows:
        print(f"\ninput {report['input']}, {flops_px / 1e6:.2f} MFLOP per input pixel")
    for row in rows:
        print(f"\n[{row['backend']}] tile {row['tile']} overlap {row['overlap']}")
        for key, value in row.items():
            if key not in ("backend", "tile", "overlap"):
                print(f"  {key:28s} {value}")
    return 0

