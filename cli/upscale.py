"""``srgan upscale``: upscaling of files or folders, locally (no server) or with ``--server URL`` on a service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale image files or folders (locally, or on a service with --server)",
                       description="Upscale images with the default or a given model; no server needed. With "
                                   "--server URL the same files are upscaled by a running service instead.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="output file (one input) or folder; default: <name>_x<scale>.<ext> beside each input")
    p.add_argument("--model", help="registry model (name or name:version), shipped model name or .onnx path "
                                  "(default: SRGAN_MODEL, else srresnet_x4)")
    p.add_argument("--detail", type=float, metavar="A",
                   help="0..1, for a GAN model with a detail base (srgan_x4): 0 = its PSNR model (smooth, "
                        "faithful), 1 = the GAN model (textured); between: weights interpolated (step 0.05)")
    p.add_argument("--scale", type=int, help="output scale; resamples the model's result when it differs")
    p.add_argument("--tile", type=_tile, help="tile size in input pixels, 0 = whole image, auto = the largest that "
                                             "fits SRGAN_MEMORY_BUDGET (default auto, SRGAN_TILE)")
    p.add_argument("--overlap", type=int, help="context pixels around each tile (default 8, SRGAN_OVERLAP)")
    p.add_argument("--format", choices=["png", "jpeg", "jpg", "webp"], help="output format (default: input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "openvino"], help="inference backend")
    p.add_argument("--precision", choices=["auto", "f32", "bf16", "f16"],
                   help="arithmetic precision (default auto, SRGAN_PRECISION): auto = bf16 on a CPU with AMX or "
                        "AVX512-BF16, f16 on a GPU, else f32, each kept only when it matches f32 on a probe image")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--server", metavar="URL", help="upscale on this service (http://host:8000) instead of locally: "
                                                  "upload, follow progress, download, retrying safely")
    p.add_argument("--api-key", metavar="KEY", help="the service's API key (with --server)")
    p.set_defaults(func=run)


def _tile(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {text!r}")
    return value


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their images (not recursive), in a stable order."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS))
        else:
            files.append(item)
    return files


def output_path(src: Path, out: Path | None, single: bool, scale: int, ext: str) -> Path:
    if out is not None and single and out.suffix and not out.is_dir():
        return out
    folder = out if out is not None else src.parent
    return folder / f"{src.stem}_x{scale}{ext}"


def run(args: argparse.Namespace) -> int:
    if args.server:
        return run_remote(args)
    if args.api_key:
        return _fail("--api-key goes with --server")
    from core.settings import get_settings
    from core.upscalers import build_upscaler, resolve_blend
    from model.errors import SRGANError
    from model.images import extension_for, output_format, read_image, resample, save_image, upscale_image

    settings = get_settings()
    tile = settings.tile if args.tile is None else args.tile
    overlap = settings.overlap if args.overlap is None else args.overlap
    if not 1 <= args.quality <= 100:
        return _fail(f"--quality must be between 1 and 100, got {args.quality}")
    files = collect_inputs(args.inputs)
    if not files:
        return _fail("no input images found")
    try:
        blend = resolve_blend(settings, args.model, args.detail)  # reads only: a local upscale writes no registry
        upscaler = build_upscaler(settings, blend, backend=args.backend, tile=tile, overlap=overlap,
                                  precision=args.precision)
    except SRGANError as exc:
        return _fail(str(exc))
    scale = args.scale or upscaler.scale
    contract = upscaler.contract
    provenance = {"model": f"{contract.name}:{contract.version}" if contract.version else contract.name,
                  **blend.describe()}
    single = len(files) == 1 and not args.inputs[0].is_dir()
    if args.output is not None and not (single and args.output.suffix):
        args.output.mkdir(parents=True, exist_ok=True)
    show = not args.no_progress and sys.stderr.isatty()
    failed = 0
    for src in files:
        try:
            img = read_image(src, max_pixels=settings.max_input_pixels)
            with _progress_bar(src.name, show) as progress:
                hr = upscale_image(upscaler, img, progress=progress)
            if scale != upscaler.scale:
                hr = resample(hr, img.width * scale, img.height * scale)
            fmt = output_format(hr, args.format)
            dst = output_path(src, args.output, single, scale, extension_for(fmt))
            save_image(hr, dst, fmt, args.quality, provenance)
            print(f"{src} -> {dst} ({hr.width}x{hr.height})")
        except (SRGANError, OSError) as exc:
            failed += 1
            print(f"srgan: error: {src}: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
    return 1 if failed else 0


def run_remote(args: argparse.Namespace) -> int:
    """The same files-and-folders command against a service (``cli.client``)."""
    import httpx

    from cli.client import Client, ClientError, JobFailed

    for name in ("tile", "overlap", "backend"):
        if getattr(args, name) is not None:
            return _fail(f"--{name} applies to local upscaling only, not with --server")
    if not 1 <= args.quality <= 100:
        return _fail(f"--quality must be between 1 and 100, got {args.quality}")
    files = collect_inputs(args.inputs)
    if not files:
        return _fail("no input images found")
    single = len(files) == 1 and not args.inputs[0].is_dir()
    if args.output is not None and not (single and args.output.suffix):
        args.output.mkdir(parents=True, exist_ok=True)
    show = not args.no_progress and sys.stderr.isatty()
    fmt = {"jpg": "jpeg"}.get(args.format or "", args.format)
    failed = 0
    with Client(args.server, api_key=args.api_key) as client:
        for src in files:
            try:
                with _progress_bar(src.name, show) as progress:
                    on_progress = (lambda p, bar=progress: bar(round(p * 1000), 1000)) if progress else None
                    job, data = client.upscale_job(src, progress=on_progress, scale=args.scale, model=args.model,
                                                   detail=args.detail, format=fmt,
                                                   quality=args.quality if args.quality != 95 else None)
                name = Path(str(job["output"].get("filename") or "")).name or f"{src.stem}_sr"  # never a path
                dst = args.output if single and args.output is not None and args.output.suffix else \
                    (args.output or src.parent) / name
                dst.write_bytes(data)
                print(f"{src} -> {dst} ({job['output']['width']}x{job['output']['height']})")
            except (ClientError, JobFailed, OSError) as exc:
                failed += 1
                print(f"srgan: error: {src}: {exc}", file=sys.stderr)
            except httpx.HTTPError as exc:
                print(f"srgan: error: cannot reach {args.server}: {exc}", file=sys.stderr)
                return 2
    return 1 if failed else 0


def _fail(message: str) -> int:
    from cli.exits import USAGE, fail

    return fail(message, USAGE)


class _progress_bar:
    """A tqdm bar over tiles when on a terminal; a no-op callback otherwise."""

    def __init__(self, name: str, show: bool) -> None:
        self.name, self.show = name, show
        self.bar: tqdm[Any] | None = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.show:
            return None
        from tqdm import tqdm

        bar = self.bar = tqdm(desc=self.name, unit="tile", leave=False)

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
