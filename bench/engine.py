"""Engine benchmark: throughput vs the machine's matmul ceiling, tiling cost, seams, memory.

Run from the repository root: ``python -m bench.engine [--model FILE.onnx] [--quick]``.
Everything is measured in one run on one machine, so the ratios are
comparable even when absolute numbers drift; each timing is the median of
``--repeat`` runs.

Prints, per backend:
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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.settings import Settings
from model.backends import openvino_available
from model.engine import Upscaler


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


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up: first call builds kernels and shapes
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_image(size: int) -> np.ndarray:
    """A photo-like input: a real training photo tiled up to ``size``, else smooth noise."""
    try:
        from tests.utils.data import training_photo

        photo = training_photo(0)
        reps = (size // photo.shape[0] + 1, size // photo.shape[1] + 1, 1)
        return np.ascontiguousarray(np.tile(photo, reps)[:size, :size])
    except (FileNotFoundError, ImportError):
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        return np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:size, :size])


def peak_rss_child(model: Path, backend: str, size: int, tile: int, overlap: int) -> float:
    """Peak RSS in GB of a fresh process that upscales a size x size input."""
    code = (
        "import resource, numpy as np\n"
        "from bench.engine import test_image\n"
        "from model.engine import Upscaler\n"
        f"up = Upscaler.from_file({str(model)!r}, backend={backend!r}, tile={tile}, overlap={overlap})\n"
        f"out = up.upscale(test_image({size}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024**2


def bench_backend(model: Path, backend: str, args, ceiling: float, flops_px: float) -> dict:
    d = Settings()
    img = test_image(args.size)
    px = img.shape[0] * img.shape[1]
    up = Upscaler.from_file(model, backend=backend, tile=d.tile, overlap=d.overlap, tile_batch=d.tile_batch)
    t_whole, whole = timed(lambda: up.upscale(img, tile=0), args.repeat)
    t_tiled, tiled = timed(lambda: up.upscale(img), args.repeat)
    row = {
        "backend": up.backend_name,
        "tile": d.tile,
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
        t, out = timed(lambda: variant.upscale(img), args.repeat)
        row[f"tiled_{tile}_{overlap}_b{batch}_vs_whole"] = round(t_whole / t, 3)
        row[f"tiled_{tile}_{overlap}_b{batch}_seam_psnr_db"] = round(psnr(out, whole), 2)
    if not args.quick:
        for tile, overlap in [(d.tile, d.overlap), *args.rss_variants]:
            row[f"peak_rss_gb_2048_{tile}_{overlap}"] = round(peak_rss_child(model, backend, 2048, tile, overlap), 2)
    return row


def _variant(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.split(":")]
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path,
                   help="ONNX generator (default: the shipped srresnet_x4, else a random-weight SRResNet x4)")
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="skip the 2048x2048 memory run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--variants", default="128:8,192:8,256:4,256:8,128:16:2",
                   help="other tile:overlap[:batch] settings to time against the whole image")
    p.add_argument("--rss-variants", default="", help="other tile:overlap settings whose 2048x2048 peak RSS to measure")
    args = p.parse_args(argv)
    args.variants = [_variant(v) for v in args.variants.split(",") if v]
    args.rss_variants = [tuple(int(x) for x in v.split(":")) for v in args.rss_variants.split(",") if v]
    with tempfile.TemporaryDirectory() as tmp:
        from model.locate import WEIGHTS_DIR

        shipped = WEIGHTS_DIR / "srresnet_x4.onnx"
        model = args.model or (shipped if shipped.is_file() else None)
        if model is None:
            from tests.utils.tiny_models import make_srresnet_model

            model = make_srresnet_model(Path(tmp) / "srresnet_x4.onnx", scale=4)
        flops_px = srresnet_flops_per_input_pixel()
        ceiling = matmul_gflops()
        rows = []
        for backend in args.backends.split(","):
            if backend == "openvino" and not openvino_available():
                print("openvino is not installed; skipped (pip install '.[openvino]')", file=sys.stderr)
                continue
            rows.append(bench_backend(model, backend, args, ceiling, flops_px))
        ceiling_after = matmul_gflops()
    report = {
        "input": f"{args.size}x{args.size}",
        "flops_per_input_pixel": flops_px,
        "matmul_gflops_before_after": [round(ceiling, 1), round(ceiling_after, 1)],
        "peak_rss_gb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "backends": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"input {report['input']}, {flops_px / 1e6:.2f} MFLOP per input pixel")
    print(f"numpy float32 matmul: {ceiling:.1f} GFLOP/s (after: {ceiling_after:.1f})")
    for row in rows:
        print(f"\n[{row['backend']}] tile {row['tile']} overlap {row['overlap']}")
        for key, value in row.items():
            if key not in ("backend", "tile", "overlap"):
                print(f"  {key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
