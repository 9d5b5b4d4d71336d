"""``srgan bench ...``: the benchmarks' arguments; the measurements are in ``bench.*``.

Each benchmark module is imported only when its subcommand runs (they load
ONNX Runtime, OpenVINO or TensorFlow). Run from the repository root: they read
``../shared/data/bench`` and start services of their own.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

from cli.exits import USAGE, fail, missing_path
from core.catalog.shipped import is_path

BENCHMARKS = {
    "engine": "engine benchmark: precisions, tiling, memory, backends against the matmul ceiling",
    "service": "service overhead: latency and throughput through the API and a worker, against the engine alone",
    "events": "live progress: how late job events reach event-stream watchers",
    "chaos": "fault injection against a real `srgan serve`: lost, duplicated and failed jobs, recovery time",
    "int8": "int8 schemes side by side: Set5/Set14 cost per image, auto's int8 probe, speed against f32/bf16",
    "gpu-check": "GPU providers: which load, their speed, agreement with the CPU",
    "train-speed": "training step speed: plain, XLA and default compile variants (TensorFlow)",
    "cross-job-batch": "several small jobs' images as one batch against one call each (throughput, extra wait)",
    "workers": "throughput of one and two workers sharing only Redis and an object store (SeaweedFS)",
    "imported": "imported models (animevideov3 from .pth and ncnn, x4plus from ncnn) in our engine against the "
                "wheel's ncnn runner: s/MP and agreement",
    "startup": "a whole srgan upscale process on a small image: f32 and auto, compile cache cold and warm",
    "realworld": "real-world conditions (JPEG, noise, blur, the training mix): our denoise/detail settings, "
                 "srresnet_x4, srgan_x4 and Real-ESRGAN x4plus side by side; criteria, panels; --calibrate",
    "eta": "how right a job's eta_s is: the estimate at 50% progress against the time really left",
}
"""``srgan bench NAME``: what each measures (the module is ``bench.<name with _>``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: " + ", ".join(BENCHMARKS),
                                  description="Benchmarks; run from the repository root (bench/README.md).")
    which = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    arguments = {"engine": _engine, "service": _service, "events": _events, "chaos": _chaos, "int8": _int8,
                 "gpu-check": _gpu_check, "train-speed": _train_speed, "cross-job-batch": _cross_job_batch,
                 "workers": _workers, "realworld": _realworld,
                 "startup": _startup, "eta": _eta, "imported": _imported}
    for name, text in BENCHMARKS.items():
        p = which.add_parser(name, help=text, description=text)
        arguments[name](p)
        p.set_defaults(func=_runner(name.replace("-", "_")))


def _runner(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        model = getattr(args, "model", None)
        models = model if isinstance(model, list) else [model]
        missing = missing_path(*(Path(m) for m in models if m is not None and is_path(str(m))))
        if missing:  # before a benchmark starts services or loads anything
            return fail(missing, USAGE, command="bench")
        return int(importlib.import_module(f"bench.{module}").run(args))

    return run


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path,
                   help="ONNX generator (default: the shipped srresnet_x4, else a random-weight SRResNet x4)")
    p.add_argument("--backend", help="backend of the default report (default: SRGAN_BACKEND)")
    p.add_argument("--precisions", default="f32,bf16,int8,auto",
                   help="precisions to compare (f32 first; auto: the engine auto built; int8 needs AMX-INT8 or "
                        "VNNI; AVX2 under OpenVINO)")
    p.add_argument("--precision-size", type=int, default=256, help="input side for the precision comparison")
    p.add_argument("--set5", type=Path, help="Set5 folder (default: ../shared/data/bench/Set5; skipped without it)")
    p.add_argument("--set14", type=Path,
                   help="Set14 folder (default: ../shared/data/bench/Set14; skipped without it)")
    p.add_argument("--backends", default="", help="also compare these backends (e.g. onnxruntime,openvino) "
                                                   "against the matmul ceiling, with --variants")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="skip the 2048x2048 memory run, Set5 and Set14")
    p.add_argument("--rewrite", default="f32,bf16",
                   help="precisions at which to time the file against its exact graph rewrite (model.graph); "
                        "empty: skip")
    p.add_argument("--json", action="store_true")
    p.add_argument("--variants", default="128:8,192:8,256:4,256:8,128:16:2",
                   help="other tile:overlap[:batch] settings to time against the whole image")
    p.add_argument("--rss-variants", default="", help="other tile:overlap settings whose 2048x2048 peak RSS to measure")
    p.add_argument("--tile-sweep", default="", metavar="WxH,...",
                   help="instead of the report: each --precisions (no auto) on these inputs (e.g. 256x256,512x384,"
                        "1024x768), the whole image against fixed tiles of 128-320 pixels (bench.engine.SWEEP_TILES)")
    p.add_argument("--candidates", default="",
                   help="instead of the report: the fast-tier table, these x4 generators against --model at each "
                        "--precisions on a whole --precision-size image: trained ONNX files (e.g. "
                        "model/weights/compact_x4.onnx; with Set5/Set14 Y-PSNR and issue 23's fast-tier verdicts) "
                        "or untrained shapes (arch:filters:blocks[:global_skip], e.g. compact:64:16:bicubic_edge, "
                        "span:48:6:bicubic_edge; default skip: bicubic; needs the train extra): FLOPs per input pixel, "
                        "s per output MP, ratios")


def _service(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="ONNX model (default: SRGAN_MODEL, else a random-weight SRResNet x4)")
    p.add_argument("--latency-jobs", type=int, default=40, help="sequential 64x64 jobs (default 40)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput (default 8)")
    p.add_argument("--throughput-jobs", type=int, default=16, help="256x256 jobs in the throughput run (default 16)")
    p.add_argument("--json", type=Path, help="also write the results here")


def _events(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="ONNX model (default: SRGAN_MODEL, else a random-weight SRResNet x4)")
    p.add_argument("--jobs", type=int, default=6, help="jobs, one after another (default 6)")
    p.add_argument("--watchers", type=int, default=4, help="event streams per job at once (default 4)")
    p.add_argument("--size", type=int, default=192, help="input image size (default 192)")
    p.add_argument("--tile", type=int, default=48, help="tile size: more tiles, more progress events (default 48)")
    p.add_argument("--json", type=Path, help="also write the results here")


def _chaos(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mutated", type=int, default=300, help="mutated files in the corpus (default 300)")
    p.add_argument("--jobs", type=int, default=4, help="jobs in flight per fault (default 4)")
    p.add_argument("--wait-s", type=float, default=90, help="how long to wait for recovery per fault")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-corpus", action="store_true")
    p.add_argument("--faults", default="", help="comma-separated subset of the faults in bench.chaos.FAULTS "
                                                "(default: all)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--skip-faults", action="store_true", help="no process faults (part 2)")
    p.add_argument("--connections", action="store_true",
                   help="part 3: slow-header and idle sockets, then an idle flood with /healthz and an upload")
    p.add_argument("--slow", type=int, default=300, help="slow-header sockets, and as many idle ones (default 300)")
    p.add_argument("--flood", type=int, default=10_000, help="idle sockets of the flood (default 10000)")
    p.add_argument("--restart-budget", action="store_true",
                   help="part 4: worker crashes spaced out, then in a row until uploads get 503")


def _int8(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="srresnet_x4,srgan_x4", help="shipped models (default: srresnet_x4,srgan_x4)")
    p.add_argument("--schemes", default="ours,ours-real,ours-minmax,ours-asym,ort-plain,nncf-plain,nncf-mixed",
                   help="schemes to compare (bench/int8.py; nncf-*: pip install '.[nncf]')")
    p.add_argument("--crops", type=int, default=32, help="training-photo crops for the real-calibrated schemes")
    p.add_argument("--size", type=int, default=256, help="input side for the speed comparison")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")


def _gpu_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped srresnet_x4)")
    p.add_argument("--sizes", default="512,2048", help="square input sides; the first is also run on the CPU")
    p.add_argument("--tile", type=int, default=512, help="tile for inputs larger than the first size")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--providers", default="", help="providers to try, in order (default: TensorRT, then CUDA)")
    p.add_argument("--json", type=Path, help="also write the report here")


def _train_speed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, XLA compilation)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hr-size", type=int, default=96)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--variants", default="plain,xla,default",
                   help="comma-separated, from plain, xla, default, bf16_xla")


def _cross_job_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="srresnet_x4", help="a shipped model name or an .onnx path")
    p.add_argument("--backend", default="auto")
    p.add_argument("--size", type=int, default=64, help="each job's image is size x size (default 64)")
    p.add_argument("--jobs", type=int, default=16, help="images per round (default 16)")
    p.add_argument("--batches", default="1,2,4,8", help="batch sizes to compare (default 1,2,4,8)")
    p.add_argument("--repeat", type=int, default=5)


def _eta(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name or .onnx path (default: SRGAN_MODEL, else srresnet_x4)")
    p.add_argument("--size", default="768x512", help="image WIDTHxHEIGHT (default 768x512)")
    p.add_argument("--tile", type=int, default=192, help="tile size: 4 tiles or more (default 192: 4x3)")
    p.add_argument("--repeat", type=int, default=3)


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=12, help="uploads at once per round (default 12)")
    p.add_argument("--size", type=int, default=64, help="input image size (default 64)")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--threads", type=int, default=0, help="inference threads per worker (0: per core)")


def _realworld(p: argparse.ArgumentParser) -> None:
    conditions = ["jpeg", "noise-jpeg", "blur-jpeg", "mix", "clean"]  # training.degradations.CONDITIONS
    p.add_argument("--family", help="our model with a denoise base (default: realworld_x4 when it is offered)")
    p.add_argument("--gan-family", help="our GAN model with both knobs (default: realworld_gan_x4 when offered)")
    p.add_argument("--conditions", nargs="+", default=conditions, choices=conditions)
    p.add_argument("--sets", nargs="+", choices=["train-split", "Set5", "Set14"], help="default: all three")
    p.add_argument("--split-images", type=int, default=16, help="held-out training images used (default: 16)")
    p.add_argument("--precision", help="engine precision (default: SRGAN_PRECISION)")
    p.add_argument("--no-niqe", action="store_true")
    p.add_argument("--no-reference", action="store_true", help="leave Real-ESRGAN x4plus out")
    p.add_argument("--reference-cache", type=Path, metavar="FILE",
                   help="reuse Real-ESRGAN x4plus's measurements kept in FILE (same upload, ground truth and "
                        "runner) and add the new ones: it is most of a full run's time")
    p.add_argument("--reference-only", action="store_true",
                   help="run Real-ESRGAN x4plus alone (to fill --reference-cache, e.g. beside a training run) and stop")
    p.add_argument("--no-monotonic", action="store_true")
    p.add_argument("--panels", type=Path, help="write labelled side-by-side crops here")
    p.add_argument("--memory", action="store_true",
                   help="peak RSS of a worker-like process running a 2048x2048 input at many detail/denoise mixes")
    p.add_argument("--json", type=Path, help="also write the whole report here")
    p.add_argument("--calibrate", action="store_true",
                   help="fit denoise auto's thresholds on the training split (needs --family) and stop")
    p.add_argument("--write-card", type=Path, metavar="CARD",
                   help="with --calibrate: store the fit in this model card as denoise_auto (what auto uses for the "
                        "model; without one, the thresholds fitted on realworld_x4)")


def _startup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="srresnet_x4")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tiles", type=lambda t: [int(x) for x in t.split(",") if x], default=[], metavar="T1,T2,...",
                   help="also auto with a warm cache at these --tile sizes (when the first tile is done, and at what "
                        "cost to the whole)")


def _imported(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=4, help="Set14 images (default: 4)")
    p.add_argument("--size", type=int, default=128, help="side of the crop of each (default: 128)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--overlaps", default="", metavar="O1,O2,...",
                   help="measure instead how much tile overlap each imported architecture needs: these overlaps "
                        "against the whole-image run, on --images BSD200 training crops of --size (at most 4)")
    p.add_argument("--tile", type=int, default=64, help="with --overlaps: the tile (default: 64)")
    p.add_argument("--strip", metavar="HxW", help="with --overlaps: crops of HxW instead of --size squares (a "
                                                  "strip shorter than the tile is cut by vertical seams only)")
    p.add_argument("--threads", type=int, default=0, help="with --overlaps: ONNX Runtime threads (default: all)")
    p.add_argument("--model", default="", help="with --overlaps: only the model whose name contains this "
                                                "(x4plus, animevideov3)")
