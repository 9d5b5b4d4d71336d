"""``srgan deploy``, ``srgan models`` and ``srgan rollback``: the model catalog from the command line.

Deploy and rollback go through ``core.catalog.publish.Publisher``, the one
publish path (``srgan export --publish`` too): it syncs the registry in
``SRGAN_MODELS_DIR`` (default ``<data_dir>/models``) with the object store's,
changes it, pushes the change and announces it on the service's Redis so
running workers use the new active version for their next job. This module
only turns arguments into a call and the result into lines for the user.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.exits import FAILED, OK, USAGE, fail
from core.catalog import store_sync
from core.catalog.announce import service_engines
from core.catalog.catalog import ModelCatalog
from core.catalog.publish import QUALITY_TOLERANCE_DB, Publisher
from core.catalog.registry import read_card
from core.settings import get_settings
from model.errors import ModelError

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="check an ONNX model, publish it to the registry and make it active",
                       description="Check FILE (it loads, a small image comes out at the declared scale and looks "
                                   "like the image, its sha256 is its card's), compare its quality with the active "
                                   "version, copy it into the registry as NAME:VERSION with its card, make it active "
                                   "and tell the workers. A file that fails a check, or scores worse than the active "
                                   "version by more than --tolerance dB PSNR-Y, is refused (unless --force) and the "
                                   "active version stays as it was. Undo with `srgan rollback NAME [--to VERSION]`.")
    p.add_argument("file", type=Path, metavar="FILE.onnx", help="the model file")
    p.add_argument("--name", required=True, help="model name, e.g. srresnet_x4 (a warning when the file was exported "
                                                 "under another name)")
    p.add_argument("--version", help="version (default: the card's or file's, else the next number)")
    p.add_argument("--card", type=Path, help="model card (default: <stem>.card.json, <stem>.json or a "
                                             "card.json naming the file, beside it)")
    p.add_argument("--scale", type=int, help="the scale, for a file with neither srgan contract nor card")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), help="declare the layout of a file without srgan contract")
    p.add_argument("--value-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="declare the pixel values the file takes and gives, e.g. 0 1 (default 0 255)")
    p.add_argument("--eval-data", type=Path, metavar="FOLDER",
                   help="measure PSNR-Y of this model and the active one on these HR images (e.g. Set5) and compare; "
                        "without it, the metrics both cards have for the same set are compared")
    p.add_argument("--tolerance", type=float, default=QUALITY_TOLERANCE_DB,
                   help="dB PSNR-Y the candidate may lose against the active version (default %(default)s)")
    p.add_argument("--detail-base", metavar="NAME",
                   help="for a GAN model: the PSNR model it blends with for `detail` (e.g. srresnet_x4); written "
                        "into its card, and refused when the two networks cannot be blended")
    p.add_argument("--force", action="store_true", help="publish and activate even when it scores worse")
    p.add_argument("--no-activate", dest="activate", action="store_false",
                   help="publish only; make it active later with `srgan rollback NAME --to VERSION`")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_deploy)

    imp = sub.add_parser("import", help="import a third-party model (ncnn .param/.bin, PyTorch .pth/.safetensors) "
                                        "and publish it like `srgan deploy`",
                         description="Convert FILE to ONNX (ncnn: its graph; PyTorch: Real-ESRGAN's compact "
                                     "architecture without torch, every other architecture spandrel detects "
                                     "through spandrel and torch.onnx with a parity check against PyTorch: the "
                                     "import extra), write a card (source files and sha256, architecture, scale, "
                                     "parameters, FLOPs per input pixel, parity; for Real-ESRGAN's architectures the "
                                     "tiling they need: its pre-pad and a measured minimum overlap, also in the "
                                     "file's contract), then check, gate and publish it as NAME through the one "
                                     "publish path, made active unless --no-activate.")
    imp.add_argument("file", type=Path, metavar="FILE", help="model.param (its .bin beside it), .pth, .pt or "
                                                             ".safetensors")
    imp.add_argument("--parity-image", type=Path, metavar="IMAGE",
                     help="for a file imported through spandrel: check ONNX Runtime against PyTorch on the middle "
                          "60x48 of this picture (default: a built-in textured image)")
    imp.add_argument("--name", help="model name (default: the file's stem, made a valid name)")
    imp.add_argument("--licence", help="the model's licence, for its card (e.g. BSD-3-Clause)")
    imp.add_argument("--output", type=Path, metavar="DIR",
                     help="also keep the converted <name>.onnx and its card here")
    imp.add_argument("--no-activate", dest="activate", action="store_false", help="publish only")
    imp.add_argument("--force", action="store_true", help="publish and activate even when it scores worse")
    imp.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    imp.set_defaults(func=run_import)

    p = sub.add_parser("models", help="list the registry's models and versions",
                       description="Names, versions, which is active, scale and measured quality (PSNR-Y on Set5 "
                                   "and Set14; the model's NIQE, with the ground truth's and bicubic's in their own "
                                   "columns, when measured), the tiling a model needs (when one states it), and the "
                                   "registry's folder.")
    p.add_argument("--json", action="store_true", help="print what GET /v1/models answers")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_models)

    p = sub.add_parser("rollback", help="make the previous (or any published) version of a model active again",
                       description="Make the version that was active before the current one active again, or "
                                   "--to VERSION (any published version: see `srgan models`), and tell the workers.")
    p.add_argument("name", help="model name")
    p.add_argument("--to", metavar="VERSION", help="activate this published version instead")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_rollback)


def _catalog(args: argparse.Namespace) -> ModelCatalog:
    settings = get_settings()
    if args.models_dir is not None:
        settings = settings.model_copy(update={"models_dir": args.models_dir})
    return ModelCatalog(settings)


def _publisher(catalog: ModelCatalog | None = None) -> Publisher:
    """The publisher of ``catalog`` (default: the settings'), checking files with the engine."""
    from core.catalog.checks import EngineInspector  # lazy: the engine (ONNX Runtime) for deploy only

    return Publisher(catalog or ModelCatalog(get_settings()), EngineInspector())


def run_import(args: argparse.Namespace) -> int:
    import onnx  # start-up: onnx, for imports only

    from importers.convert import import_file  # start-up: numpy and onnx

    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", args.file.stem).strip("._-") or "imported"
    try:
        parity = _parity_crop(args.parity_image) if args.parity_image else None
        imported = import_file(args.file, name, parity_hwc_u8=parity)
    except FileNotFoundError as exc:
        return fail(str(exc), USAGE, command="import")
    except ValueError as exc:  # refused: unknown architecture or op, damaged or truncated file (nothing published)
        return fail(f"{args.file}: {exc}", USAGE, command="import")
    card = {**imported.card, **({"licence": args.licence} if args.licence else {})}
    arch = card["architecture"]
    print(f"{args.file}: {arch['type']}, x{card['scale']}, {arch['parameters']:,} parameters, "
          f"{arch['flops_per_input_pixel'] / 1e6:.2f} MFLOP per input pixel")
    if card.get("parity"):
        parity = card["parity"]
        psnr = "identical" if parity["psnr_db"] is None else f"{parity['psnr_db']} dB"
        print(f"parity: ONNX Runtime against PyTorch on a {parity['image']} image: max difference "
              f"{parity['max_abs_diff']:.2g}, {psnr} (floor {parity['floor_db']:.0f} dB)")
    if card.get("tiling_basis"):
        print(f"tiling: {card['tiling_basis']}")
    with tempfile.TemporaryDirectory(prefix="srgan-import-") as tmp:
        folder = args.output or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path = folder / f"{name}.onnx"
        onnx.save(imported.proto, str(onnx_path))
        (folder / f"{name}.card.json").write_text(json.dumps(card, indent=2) + "\n")
        return publish_and_report(_catalog(args), onnx_path, name, card=card, activate=args.activate,
                                  force=args.force, source=f"srgan import: {args.file}")


def _parity_crop(path: Path) -> np.ndarray:
    """The middle 60x48 (or less) of a picture, RGB: what ``srgan import --parity-image`` checks on."""
    import numpy as np  # start-up: numpy and Pillow, for this option only
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the --parity-image path")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except OSError as exc:  # Pillow's UnidentifiedImageError and truncated files
        raise ValueError(f"--parity-image {path}: not a picture Pillow reads ({exc})") from None
    h, w = min(rgb.shape[0], 48), min(rgb.shape[1], 60)
    top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    return np.ascontiguousarray(rgb[top : top + h, left : left + w, :3])


def run_deploy(args: argparse.Namespace) -> int:
    for given in (args.file, args.card):
        if given is not None and not given.is_file():
            return fail(f"{given}: no such file; check the path (nothing was published)", USAGE, command="deploy")
    try:
        card = read_card(args.card) if args.card else None
    except ModelError as exc:
        return fail(exc.message, command="deploy")
    return publish_and_report(_catalog(args), args.file, args.name, card=card, version=args.version,
                              scale=args.scale, layout=args.layout,
                              value_range=tuple(args.value_range) if args.value_range else None,
                              activate=args.activate, eval_data=args.eval_data, force=args.force,
                              tolerance_db=args.tolerance, detail_base=args.detail_base)


def publish_and_report(catalog: ModelCatalog | None, file: Path, name: str, **options: Any) -> int:
    """Publish ``file`` as ``name`` (:meth:`core.catalog.publish.Publisher.publish`) and tell the user what happened:
    ``srgan deploy`` and ``srgan export --publish``. ``catalog=None``: the settings' registry."""
    publisher = _publisher(catalog)
    catalog = publisher.catalog
    catalog.seed()  # the start-up step of this process: the shipped models are there to compare with
    before = catalog.registry.active_version(name)  # for the failure message; done.before once published
    try:
        done = publisher.publish(file, name, **options)
    except ModelError as exc:
        kept = f"; the active version of {name} is still {before}" if before else ""
        return fail(f"{exc.message}{kept}", command="deploy")
    for note in done.notes:
        print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)
    published = done.version
    check = (published.card.get("registry") or {}).get("check", "")
    print(f"published {published.ref} (x{published.scale}, sha256 {published.card['sha256'][:12]}..., "
          f"check: {check}) in {catalog.registry.root / name / published.version}")
    if not options.get("activate", True):
        print(f"not activated; the active version of {name} is still {done.before} "
              f"(`srgan rollback {name} --to {published.version}` makes it active)")
        return OK
    print(f"{name}: active version {done.before} -> {published.version} "
          f"(undo: `srgan rollback {name}`, or --to VERSION)")
    print(done.announced)
    return OK


def run_rollback(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        before, now, announced = Publisher(catalog).rollback(args.name, to=args.to)
    except ModelError as exc:
        hint = "" if args.to else f"; `srgan rollback {args.name} --to VERSION` activates any published version"
        known = catalog.registry.has(args.name) and (
            args.to is None or any(v.version == args.to for v in catalog.registry.versions(args.name)))
        return fail(f"{exc.message}{hint}", FAILED if known else USAGE, command="rollback")
    except OSError as exc:
        return fail(f"the object store failed: {exc}", command="rollback")
    print(f"{args.name}: active version {before} -> {now}")
    print(announced)
    return OK


QUALITY_COLUMNS = (("SET5", "set5_psnr_y", "{:.2f} dB"), ("SET14", "set14_psnr_y", "{:.2f} dB"))
"""The PSNR columns of ``srgan models``: header, metric key, format."""
NIQE_COLUMNS = (("NIQE", ""), ("NIQE-HR", "hr_"), ("NIQE-BIC", "bicubic_"))
"""The NIQE columns: the model's own, then the references measured on the same images (the ground truth and
bicubic), each labelled; a metric ``<set>_<prefix>niqe``."""
_REFERENCES = ("hr", "bicubic")


def niqe_set(metrics: dict[str, float]) -> str | None:
    """The set the model's own NIQE was measured on: ``set14`` when it was, else the first other (or None)."""
    own = sorted(key[: -len("_niqe")] for key in metrics
                 if key.endswith("_niqe") and not key[: -len("_niqe")].endswith(tuple(f"_{r}" for r in _REFERENCES)))
    return "set14" if "set14" in own else own[0] if own else None


def _quality_cells(metrics: dict[str, float], references: bool) -> list[str]:
    cells = [fmt.format(metrics[key]) if key in metrics else "-" for _, key, fmt in QUALITY_COLUMNS]
    where = niqe_set(metrics)
    for _, prefix in NIQE_COLUMNS[: None if references else 1]:
        value = metrics.get(f"{where}_{prefix}niqe") if where else None
        cells.append(f"{value:.2f}" if value is not None else "-")
    return cells


def run_models(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    settings = catalog.settings
    try:
        store_sync.pull(settings)  # with an object store: list what every host runs
    except OSError as exc:
        print(f"could not sync the registry from the object store ({exc}); listing this host's", file=sys.stderr)
    try:
        listing = catalog.listing(service_engines(settings))
    except ModelError as exc:
        if args.json:
            return fail(exc.message, command="models")
        listing = {"models": [], "precision": settings.precision}
        print(f"no models: {exc.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(listing, indent=2))
        return OK
    references = any(f"{niqe_set(m['metrics'])}_{r}_niqe" in m["metrics"] for m in listing["models"]
                     for r in _REFERENCES)
    niqe_headers = [c[0] for c in NIQE_COLUMNS[: None if references else 1]]
    tiled = any(m.get("tiling") for m in listing["models"])
    rows = [("NAME", "VERSION", "ACTIVE", "SCALE", *(c[0] for c in QUALITY_COLUMNS), *niqe_headers,
             *(["TILING"] if tiled else []), "PRECISION", "INT8-COST", "PUBLISHED")]
    for m in listing["models"]:
        active = "active" + (", default" if m["default"] else "") if m["active"] else ""
        if m["source"] == "file":
            active += " (file)"
        rows.append((m["name"], m["version"] or "-", active, f"x{m['scale']}" if m["scale"] else "?",
                     *_quality_cells(m["metrics"], references), *([_tiling_cell(m.get("tiling"))] if tiled else []),
                     m["precision"] or "-", _int8_cell(m.get("int8")), (m["published_at"] or "-")[:16]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if any(m["source"] == "file" for m in listing["models"]):
        print("\n(file): run from its .onnx file (shipped, or SRGAN_MODEL's path), not published in the registry")
    print(f"\nregistry: {catalog.registry.root.resolve()} (SRGAN_MODELS_DIR, or SRGAN_DATA_DIR/models; "
          f"data folder {Path(settings.data_dir).resolve()})")
    print("quality: PSNR-Y on Set5/Set14 as measured at export or deploy (`srgan models --json` for every metric)")
    print("NIQE (lower looks more natural): the model's own on Set14 (else the set it was measured on)"
          + ("; NIQE-HR and NIQE-BIC: the ground-truth images' and bicubic's on the same set" if references
             else ""))
    if tiled:
        print(f"TILING: what the model needs, in input pixels: overlap>=N, tiles get at least N of context "
              f"(SRGAN_OVERLAP {settings.overlap} otherwise); pad N, N reflected around the image and cropped off")
    print(f"precision: {settings.precision} ({_auto_here()}); PRECISION: what a worker last loaded it in")
    print("INT8-COST: Y-PSNR (dB) lost to int8 against f32 on Set5/Set14 (mean; <0: int8 scored higher), as the "
          "card records it (`srgan models --json`: the scheme, the worst image, where measured)")
    return OK


def _tiling_cell(tiling: dict[str, int] | None) -> str:
    """``overlap>=32,pad=10`` (the parts a model states), or ``-``."""
    if not tiling:
        return "-"
    parts = [f"overlap>={tiling['min_overlap']}" if tiling.get("min_overlap") else "",
             f"pad={tiling['pre_pad']}" if tiling.get("pre_pad") else ""]
    return ",".join(p for p in parts if p) or "-"


def _int8_cell(int8: dict | None) -> str:
    """The card's int8 cost on Set5/Set14 (mean, dB), ``<0`` where int8 scored higher than f32, or ``-``."""
    if not int8 or "set5_cost_db" not in int8 or "set14_cost_db" not in int8:
        return "-"
    costs = (float(int8["set5_cost_db"]), float(int8["set14_cost_db"]))
    return "/".join("<0" if c < 0 else f"{c:.3f}" for c in costs)


def _auto_here() -> str:
    """What ``auto`` picks on this machine's CPU (a GPU worker picks f16)."""
    # start-up: the engine's backends
    from model.backends import BF16_CPU_FLAGS, cpu_flags, cpu_model, native_precision, openvino_available  # start-up
    from model.int8 import int8_units

    flags = cpu_flags()
    has = [f for f in BF16_CPU_FLAGS if f in flags]
    backend = "openvino:CPU" if openvino_available() else "onnxruntime:CPUExecutionProvider"
    int8 = int8_units(flags, backend.split(":")[0])
    return (f"auto on this machine's CPU, {cpu_model()}: {native_precision(backend)} with {backend.split(':')[0]}; "
            f"bfloat16 units: {', '.join(has) or 'none'}; int8 units: {int8 or 'none'}"
            + (" (auto tries int8 first with OpenVINO and the compile cache)" if int8 else ""))
