"""``srgan upscale``: upscaling of files or folders, locally (no server) or with ``--server URL`` on a service."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.exits import USAGE, describe_os_error, fail
from core.catalog.catalog import ModelCatalog, choose_denoise, require_denoise_base
from core.settings import get_settings
from core.sizing import MAX_SCALE, MIN_SCALE, OutputSize
from model.errors import InvalidParameter, ModelError, SRGANError

if TYPE_CHECKING:  # start-up: the engine
    from PIL import Image

    from core.catalog.catalog import Blend
    from model.engine import Progress, Upscaler

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".avif": "avif"}
"""The output formats, by the extension of a named output file."""


class UsageError(Exception):
    """A wrong combination of arguments: one ``srgan: error:`` line, exit status 2."""


@dataclass(frozen=True)
class Source:
    """An input file, and its folder relative to the input folder it was found in (mirrored under ``-o``)."""

    path: Path
    folder: Path = Path()

    def __str__(self) -> str:
        return str(self.path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale image files or folders (locally, or on a service with --server)",
                       description="Upscale images with the default or a given model; no server needed. With "
                                   "--server URL the same files are upscaled by a running service instead.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="output file (one input; its extension .png/.jpg/.webp/.avif sets the format) or folder (made "
                        "if missing); default: <name>_<size>.<ext> beside each input (photo_x4.png, photo_x2.5.png, "
                        "photo_1920w.png, photo_1080h.png, photo_1920x1080.png, photo_max1600.png)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also the images in subfolders of a folder input (the tree is mirrored under -o)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (default: skip them, so a batch can be re-run)")
    p.add_argument("--model", help="registry model (name or name:version), shipped model name, a family's name "
                                  "(realworld: realworld_x2 or realworld_x4, the one the size needs) or .onnx path "
                                  "(default: SRGAN_MODEL, else srresnet_x4)")
    p.add_argument("--detail", type=float, metavar="A",
                   help="0..1, for a GAN model with a detail base (srgan_x4): 0 = its PSNR model (smooth, "
                        "faithful), 1 = the GAN model (textured); between: weights interpolated (step 0.05)")
    p.add_argument("--denoise", type=_denoise, metavar="auto|N", default=None,
                   help="0..1 or auto, for a real-world model (realworld_x4): how much JPEG blocking, noise and blur "
                        "to remove; 0 = its clean model (keeps everything), 1 = the strongest restoration; auto (the "
                        "default) estimates it from each image's JPEG quality and noise (a clean image gets 0)")
    size = p.add_argument_group("size", "the result's size: a scale, or a width, height or longer side (aspect kept); "
                                        "the scale it needs must be from 1 to 8. With no --model (or a family's name), "
                                        "the smallest model whose scale reaches it runs and its output is resampled "
                                        "(Lanczos)")
    size.add_argument("--scale", type=_scale, metavar="S",
                      help="1 to 8, fractional too (2.5): round(w*S) x round(h*S) (default: the model's scale)")
    size.add_argument("--width", type=_pixels, metavar="W", help="the result's width; the height keeps the aspect")
    size.add_argument("--height", type=_pixels, metavar="H",
                      help="the result's height; with --width: fit inside W x H, aspect kept")
    size.add_argument("--max-side", type=_pixels, metavar="N", help="the result's longer side")
    p.add_argument("--tile", type=_tile, help="tile size in input pixels, 0 = whole image, auto = the largest that "
                                             "fits SRGAN_MEMORY_BUDGET (default auto, SRGAN_TILE)")
    p.add_argument("--overlap", type=int, help="context pixels around each tile (default 8, SRGAN_OVERLAP; "
                                                   "at least what the model's contract asks)")
    p.add_argument("--format", choices=["png", "jpeg", "jpg", "webp", "avif"],
                   help="output format (default: the extension of -o FILE, else the input's; a HEIC photo: jpeg). "
                        "A 16-bit PNG or TIFF keeps 16 bits as png; the others hold 8 (a warning says so)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP/AVIF quality 1-100 (default 95)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "openvino"], help="inference backend")
    p.add_argument("--precision", choices=["auto", "f32", "bf16", "f16", "int8"],
                   help="arithmetic precision (default auto, SRGAN_PRECISION): auto = int8 with OpenVINO on a CPU "
                        "with AMX-INT8, VNNI or AVX2 when it passes its probe (<= 0.05 dB), else bf16 on a CPU with "
                        "AMX or AVX512-BF16, f16 on a GPU, else f32, each kept only when it matches f32 on a probe "
                        "image; int8 is refused where it would be slower than f32 (ONNX Runtime without VNNI/AMX, "
                        "OpenVINO without AVX2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timings", action="store_true",
                   help="print, for each file, the seconds from the process's start to: the command running, each "
                        "engine ready (model loaded, compiled, precision probed), the first tile done, all tiles "
                        "done and the file written (stderr; local upscales)")
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


def _scale(text: str) -> float:
    """``--scale``: a number from 1 to 8."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from {MIN_SCALE} to {MAX_SCALE}, got {text!r}") from None
    if not MIN_SCALE <= value <= MAX_SCALE:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected a number from {MIN_SCALE} to {MAX_SCALE}, got {text!r}")
    return value


def _pixels(text: str) -> int:
    """``--width``, ``--height``, ``--max-side``: a whole number of pixels, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 pixel or more, got {text!r}")
    return value


def asked_size(args: argparse.Namespace) -> OutputSize:
    """The size the arguments ask for; ``UsageError`` for --scale with a size, or --max-side with --width/--height."""
    sizes = [f"--{name.replace('_', '-')}" for name in ("width", "height", "max_side") if getattr(args, name)]
    if args.scale is not None and sizes:
        raise UsageError(f"--scale goes alone, not with {' or '.join(sizes)}: give a scale or a size")
    if args.max_side is not None and len(sizes) > 1:
        raise UsageError("--max-side goes alone, not with --width or --height")
    return OutputSize.checked(scale=args.scale, width=args.width, height=args.height, max_side=args.max_side)


def check_sizes(sources: list[Source], size: OutputSize, max_input_pixels: int) -> None:
    """``UsageError`` for the first input the asked size cannot be made of (a scale outside 1..8), before any
    runs; an input whose header cannot be read fails later, on its own."""
    if not size.fixed_by_size:
        return
    from model.images import read_header  # start-up: Pillow

    for src in sources:
        try:
            info = read_header(src.path, max_pixels=max_input_pixels)
        except (SRGANError, OSError):
            continue
        try:
            size.needed_scale(info.width, info.height)
        except InvalidParameter as exc:
            raise UsageError(f"{src}: {exc.message} (nothing was upscaled)") from None


def collect_inputs(inputs: list[Path], *, recursive: bool = False, exclude: Path | None = None) -> list[Source]:
    """Files as given, folders expanded to their images (with ``recursive``, those of subfolders too), in a
    stable order; nothing under ``exclude`` (the output folder, when it lies inside an input folder)."""
    sources: list[Source] = []
    for item in inputs:
        if not item.is_dir():
            sources.append(Source(item))
            continue
        root = item.resolve()
        inner = exclude.resolve() if exclude is not None else None
        if inner is not None and (inner == root or not inner.is_relative_to(root)):
            inner = None  # only an output folder strictly inside this input folder holds no inputs
        found = item.rglob("*") if recursive else item.iterdir()
        for path in sorted(p for p in found if p.is_file() and p.suffix.lower() in EXTENSIONS):
            if inner is not None and path.resolve().is_relative_to(inner):
                continue
            sources.append(Source(path, path.parent.relative_to(item)))
    return sources


def requested_format(fmt: str | None, output: Path | None, to_file: bool) -> str | None:
    """The asked output format: ``--format``, else a named output file's extension; a conflict is an error."""
    asked = {"jpg": "jpeg"}.get(fmt or "", fmt)
    if not to_file or output is None:
        return asked
    by_suffix = SUFFIX_FORMATS.get(output.suffix.lower())
    if asked is None and by_suffix is None:
        raise UsageError(f"cannot tell the output format from {output.name!r}: name it .png, .jpg, .webp or .avif, "
                         "or give --format")
    if asked is not None and by_suffix is not None and asked != by_suffix:
        raise UsageError(f"--format {fmt} conflicts with the output file {output.name!r} ({by_suffix}); "
                         "give one or make them agree")
    return asked or by_suffix


def writes_one_file(inputs: list[Path], sources: list[Source], output: Path | None) -> bool:
    """Whether ``-o`` names the output file (one input file, an output with an extension that is not a folder)."""
    return (output is not None and len(sources) == 1 and not inputs[0].is_dir() and bool(output.suffix)
            and not output.is_dir())


def output_path(src: Source, out: Path | None, to_file: bool, label: str, ext: str) -> Path:
    """Where ``src``'s result goes: ``out`` itself, or ``<name>_<label><ext>`` (``label``: the size,
    ``OutputSize.label``: ``x4``, ``x2.5``, ``1920w``...) under ``out`` (mirroring ``src.folder``) or beside the
    input."""
    if to_file and out is not None:
        return out
    folder = out / src.folder if out is not None else src.path.parent
    return folder / f"{src.path.stem}_{label}{ext}"


@dataclass
class Tally:
    """What a batch did, reported at its end."""

    done: int = 0
    skipped: int = 0
    failed: int = 0

    def report(self) -> str:
        return f"srgan upscale: {self.done} done, {self.skipped} skipped, {self.failed} failed"

    def exit_status(self) -> int:
        return 1 if self.failed else 0


def run(args: argparse.Namespace) -> int:
    if args.server:
        return run_remote(args)
    if args.api_key:
        return _fail("--api-key goes with --server")
    from core.catalog.load import build_upscaler, provenance  # start-up: onnx and the engine
    from core.render import PixelLimits, RenderOptions, render, write_file  # start-up: Pillow
    from model.images import default_output_format, extension_for, read_header  # start-up: Pillow

    settings = get_settings()
    if (args.precision or settings.precision) == "int8":  # refused before any image is read or model loaded
        from model.backends import check_int8_cpu  # start-up: the engine's runtimes

        try:
            check_int8_cpu(backend="onnxruntime" if args.backend == "onnxruntime" else "openvino")
        except ModelError as exc:
            return _fail(exc.message)
    try:
        sources, to_file, fmt, size = _plan(args, settings.max_input_pixels)
    except UsageError as exc:
        return _fail(str(exc))
    engines: dict[tuple[tuple[str, float], ...], Upscaler] = {}
    clock = Timings(args.timings)
    clock.mark("command running")

    def engine_for(blend: Blend) -> Upscaler:
        """Each blend's engine built once (denoise auto may pick another one for each image)."""
        key = tuple((str(m.path), w) for m, w in blend.parts())
        if key not in engines:
            engines[key] = build_upscaler(settings, blend, backend=args.backend, tile=args.tile,
                                          overlap=args.overlap, precision=args.precision)  # None: the settings'
            clock.mark("engine ready")
        return engines[key]

    catalog = ModelCatalog(settings)  # reads only: a local upscale writes no registry

    def pick(img: Image.Image) -> tuple[Upscaler, dict[str, Any]]:
        """The engine for this image: the named model, else the one the catalog picks for its needed scale (no model
        or a family named)."""
        spec = catalog.spec_for(args.model, size.needed_scale(img.width, img.height))
        blend = catalog.blend(spec, args.detail, choose_denoise(catalog.resolve(spec), args.denoise, img))
        upscaler = engine_for(blend)
        return upscaler, provenance(upscaler, blend)

    try:
        first = catalog.blend(catalog.spec_for(args.model, None), args.detail)
        if isinstance(args.denoise, float):  # an asked strength needs a model with denoise control: say so now
            require_denoise_base(first.target)
        label = size.label(first.target.scale or engine_for(first).scale)
    except SRGANError as exc:
        return _fail(str(exc))
    options = RenderOptions(size=size, quality=args.quality)  # the format is each file's (below)
    limits = PixelLimits.from_settings(settings)
    show = not args.no_progress and sys.stderr.isatty()
    tally = Tally()
    planned: list[tuple[Source, Path, str]] = []
    for src in sources:
        try:
            if fmt is not None:
                src_fmt = fmt
            else:
                info = read_header(src.path, max_pixels=settings.max_input_pixels)
                src_fmt = default_output_format(info.format, info.has_alpha)
            planned.append((src, output_path(src, args.output, to_file, label, extension_for(src_fmt)), src_fmt))
        except (SRGANError, OSError) as exc:
            tally.failed += 1
            _error(src, exc)
    outputs = {dst.resolve() for _, dst, _ in planned}
    for src, dst, src_fmt in planned:
        if src.path.resolve() in outputs and not to_file:  # a result of an earlier run beside its input
            continue
        if dst.exists() and not args.overwrite:
            tally.skipped += 1
            print(f"{src} -> {dst}: exists, skipped (--overwrite replaces it)")
            continue
        try:
            with ProgressBar(src.path.name, show) as progress:
                result = render(pick, src.path, replace(options, format=src_fmt), limits,
                                progress=clock.watch(progress))
            write_file(dst, result.data)
            clock.mark("written")
            clock.report(src)
        except (SRGANError, OSError) as exc:
            tally.failed += 1
            _error(src, exc)
            continue
        tally.done += 1
        depth = ", 16 bits per channel" if result.bit_depth == 16 else ""
        print(f"{src} -> {dst} ({result.width}x{result.height}{depth})")
        for warning in result.warnings:
            print(f"srgan: warning: {src}: {warning}", file=sys.stderr)
    if len(sources) > 1 or any(i.is_dir() for i in args.inputs):
        print(tally.report())
    return tally.exit_status()


def _denoise(value: str) -> float | str:
    """``--denoise``: auto, or a number 0..1."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"denoise must be between 0 and 1, got {value}")
    return number


def _plan(args: argparse.Namespace, max_input_pixels: int) -> tuple[list[Source], bool, str | None, OutputSize]:
    """The inputs, whether ``-o`` names one file, the asked format and size; ``UsageError`` for bad arguments."""
    if not 1 <= args.quality <= 100:
        raise UsageError(f"--quality must be between 1 and 100, got {args.quality}")
    size = asked_size(args)
    missing = [str(item) for item in args.inputs if not item.exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder; check the path (nothing was upscaled)")
    sources = collect_inputs(args.inputs, recursive=args.recursive, exclude=args.output)
    if not sources:
        raise UsageError("no input images found" + ("" if args.recursive else " (--recursive looks in subfolders)"))
    to_file = writes_one_file(args.inputs, sources, args.output)
    fmt = requested_format(args.format, args.output, to_file)
    check_sizes(sources, size, max_input_pixels)
    return sources, to_file, fmt, size


def _error(src: Source | Path, exc: Exception) -> None:
    if isinstance(exc, OSError):
        text = describe_os_error(exc)
        print(f"srgan: error: {text if exc.filename is not None else f'{src}: {text}'}", file=sys.stderr)
        return
    print(f"srgan: error: {src}: {getattr(exc, 'message', None) or exc}", file=sys.stderr)


def run_remote(args: argparse.Namespace) -> int:
    """The same files-and-folders command against a service (``cli.client``)."""
    import httpx  # start-up: httpx

    from cli.client import Client, ClientError, JobFailed  # start-up: httpx
    from core.render import write_file  # start-up: Pillow

    for name in ("tile", "overlap", "backend"):
        if getattr(args, name) is not None:
            return _fail(f"--{name} applies to local upscaling only, not with --server")
    try:
        sources, to_file, fmt, size = _plan(args, get_settings().max_input_pixels)
    except UsageError as exc:
        return _fail(str(exc))
    show = not args.no_progress and sys.stderr.isatty()
    tally = Tally()
    with Client(args.server, api_key=args.api_key) as client:
        for src in sources:
            if to_file and args.output.exists() and not args.overwrite:
                tally.skipped += 1
                print(f"{src} -> {args.output}: exists, skipped (--overwrite replaces it)")
                continue
            try:
                with ProgressBar(src.path.name, show, unit="%") as progress:
                    on_progress = (lambda p, bar=progress: bar(round(p * 100), 100)) if progress else None
                    job, data = client.upscale_job(src.path, progress=on_progress, **size.params(),
                                                   model=args.model, detail=args.detail, format=fmt,
                                                   denoise=args.denoise,
                                                   quality=args.quality if args.quality != 95 else None)
                name = Path(str(job["output"].get("filename") or "")).name or f"{src.path.stem}_sr"  # never a path
                dst = args.output if to_file else \
                    (args.output / src.folder if args.output is not None else src.path.parent) / name
                if dst.exists() and not args.overwrite and not to_file:  # the service names it: known only now
                    tally.skipped += 1
                    print(f"{src} -> {dst}: exists, skipped (--overwrite replaces it)")
                    continue
                write_file(dst, data)
            except (ClientError, JobFailed, OSError) as exc:
                tally.failed += 1
                _error(src, exc)
                continue
            except httpx.HTTPError as exc:
                why = "nothing answers there" if isinstance(exc, httpx.ConnectError) else \
                    "it did not answer in time" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
                print(f"srgan: error: cannot reach {args.server} ({why}); check the address and that the service "
                      "is running (`srgan serve`)", file=sys.stderr)
                return 2
            tally.done += 1
            depth = ", 16 bits per channel" if job["output"].get("bit_depth") == 16 else ""
            print(f"{src} -> {dst} ({job['output']['width']}x{job['output']['height']}{depth})")
            for warning in job.get("warnings") or []:
                print(f"srgan: warning: {src}: {warning}", file=sys.stderr)
    if len(sources) > 1 or any(i.is_dir() for i in args.inputs):
        print(tally.report())
    return tally.exit_status()


def _fail(message: str) -> int:
    return fail(message, USAGE)


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), from Linux's /proc; None
    where that is not known."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime (after the name)
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Timings:
    """``--timings``: the moments of a local upscale in seconds from the process's start (from the command's
    start where the process's is not known), printed per file on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        age = process_age() if enabled else None
        self.origin = time.perf_counter() - (age or 0.0)
        self.since = "process start" if age is not None else "command start"
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        if self.enabled:
            self.marks.append((what, time.perf_counter() - self.origin))

    def watch(self, progress: Progress | None) -> Progress | None:
        """``progress`` that also marks the first and the last tile."""
        if not self.enabled:
            return progress

        first = [True]

        def update(done: int, total: int) -> None:
            if first[0]:  # after the first batch of tiles (one tile unless the engine batches them)
                first[0] = False
                self.mark("first tile")
            if done == total:
                self.mark("all tiles")
            if progress is not None:
                progress(done, total)

        return update

    def report(self, src: Source) -> None:
        if self.enabled:
            moments = ", ".join(f"{what} {at:.2f} s" for what, at in self.marks)
            print(f"srgan: timings: {src}: from {self.since}: {moments}", file=sys.stderr)
            self.marks = []


class ProgressBar:
    """A tqdm bar over tiles (``unit``) when ``show`` (on a terminal), with the rate and the time left measured
    on them (``3/12 [00:04<00:12, 0.75tile/s]``); entering gives its callback, or None."""

    def __init__(self, name: str, show: bool, *, unit: str = "tile") -> None:
        self.name, self.show, self.unit = name, show, unit
        self.bar: Any = None

    def __enter__(self) -> Progress | None:
        if not self.show:
            return None
        from tqdm import tqdm  # start-up: tqdm

        bar = self.bar = tqdm(desc=self.name, unit=self.unit, leave=False, smoothing=0.1)

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)  # through update(), so tqdm measures the rate and the time left
            bar.refresh()

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
