"""``srgan train pretrain|gan``, ``srgan export``, ``srgan eval``, ``srgan release`` and ``srgan figures``.

:func:`register` adds the subcommands to the ``srgan`` parser; the work is
in ``training.*`` (the only argument parsing of training is here). Importing
this module imports neither TensorFlow nor ONNX Runtime; each handler imports
what it needs when it runs (``eval`` never imports TensorFlow).

Every field of :class:`training.config.TrainConfig` is a flag
(``optim.warmup_steps`` is ``--warmup-steps``); a flag left out keeps the
value of the saved run (``--resume``), of ``--config FILE.json``, or the
stage's default, in that order.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from cli.exits import INTERRUPTED, OK, USAGE, error_text, fail, missing_path
from cli.models import publish_and_report
from core.catalog.registry import DeployRefused, card_path_for
from model.errors import SRGANError
from training.config import DegradeConfig, Stage, TrainConfig, default_config, load_overrides_file, merge
from training.degradations import CONDITIONS, write_examples
from training.sources import list_images

_SECTIONS = ("generator", "data", "degrade", "optim", "gan")
_TOP_SKIP = {"stage", *_SECTIONS}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` (``pretrain``, ``gan``), ``export``, ``eval``, ``release`` and ``figures`` to ``subparsers``."""
    train = subparsers.add_parser("train", help="train SRResNet (pretrain) or SRGAN (gan)")
    stages = train.add_subparsers(dest="stage", required=True, metavar="{pretrain,gan,degrade,pack,unpack}")
    for stage, text in (
        ("pretrain", "SRResNet with a pixel loss; defaults tuned for fast convergence on a CPU"),
        ("gan", "SRGAN from a pretrained generator: VGG54 content loss + 1e-3 adversarial loss"),
    ):
        p = stages.add_parser(stage, help=text, description=text)  # each flag's help states its default once
        p.add_argument("--config", type=Path, help="JSON file with any of the settings below (flags win)")
        p.add_argument("--resume", action="store_true", help="continue the run in --run-dir where it stopped")
        p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
        _add_config_flags(p, default_config(cast(Stage, stage)), cast(Stage, stage))
        p.set_defaults(func=_handle_train, stage=stage)
    _register_degrade(stages)
    _register_pack(stages)

    export = subparsers.add_parser("export", help="export a trained generator to ONNX with a parity check")
    export.add_argument(
        "source", type=Path, metavar="CHECKPOINT_OR_WEIGHTS", help="run directory, checkpoint or .weights.h5"
    )
    export.add_argument(
        "-o", "--output", type=Path, required=True, help="the .onnx file to write (its card goes beside it as "
        "<stem>.card.json)"
    )
    export.add_argument("--name", default=None, help="model name (default: the run directory's name)")
    export.add_argument("--version", default=None, help="model version (default: the training step, e.g. step-50000)")
    export.add_argument(
        "--scale", type=int, choices=(2, 4, 8), help="architecture, when no config.json is beside the weights"
    )
    export.add_argument("--arch", choices=("srresnet", "compact", "span"),
                        help="architecture, when no config.json (nor a card) is beside the weights")
    export.add_argument("--filters", type=int, help="architecture, when no config.json is beside the weights")
    export.add_argument("--blocks", type=int, help="architecture, when no config.json is beside the weights")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--eval-data", type=Path, help="measure PSNR/SSIM on this folder, print them beside bicubic "
                                                       "and store them as metrics")
    export.add_argument("--tolerance", type=float, default=0.5, help="largest |ONNX - Keras| allowed on 0..255")
    export.add_argument("--publish", metavar="NAME",
                        help="then publish the export as `srgan deploy FILE --name NAME` does (checked, compared with "
                             "the active version, made active, workers told)")
    export.add_argument("--force", action="store_true", help="with --publish: activate even when it scores worse")
    export.add_argument("--detail-base", metavar="NAME",
                        help="for a GAN model: the PSNR model it blends with for `detail` (e.g. srresnet_x4), "
                             "written into the card and kept by --publish")
    export.set_defaults(func=_handle_export)

    ev = subparsers.add_parser("eval", help="PSNR/SSIM (Y, border crop), NIQE and colour shift of an ONNX model "
                                           "against bicubic")
    ev.add_argument("--model", required=True, type=Path, help="the .onnx file")
    ev.add_argument("--data", required=True, type=Path, help="folder of HR images (searched recursively)")
    ev.add_argument("--scale", type=int, default=None, help="default: the model's scale; another measures what a "
                    "job asking it gets (the model's output resized with the service's filter)")
    ev.add_argument("--tile", type=int, default=0, help="engine tile size; 0 = whole image (the protocol)")
    ev.add_argument("--detail", type=float, help="0..1: blend a GAN model with its detail base, as a job would")
    ev.add_argument("--condition", default="clean", choices=list(CONDITIONS),
                    help="the LR input: clean (the protocol) or a real-world degradation (" +
                    "; ".join(f"{k}: {v}" for k, v in CONDITIONS.items() if k != "clean") + ")")
    ev.add_argument("--no-niqe", action="store_true", help="skip NIQE (faster)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ev.set_defaults(func=_handle_eval)

    _register_release(subparsers)
    _register_figures(subparsers)


def _register_degrade(stages: argparse._SubParsersAction) -> None:
    text = ("write examples of the real-world degradation (training.degradations) of images, and a panel of each, "
            "for a person to look at")
    p = stages.add_parser("degrade", help=text, description=text)
    p.add_argument("input", type=Path, metavar="IN", help="an HR image or a folder of them")
    p.add_argument("output", type=Path, metavar="OUT", help="folder for the LR images, panels and degradations.json")
    p.add_argument("--seed", type=int, default=0, help="the examples of a seed are always the same (default: 0)")
    p.add_argument("--count", type=int, default=4, help="degraded examples per image (default: 4)")
    p.add_argument("--scale", type=int, default=4, choices=(2, 3, 4, 8), help="LR is this much smaller (default: 4)")
    p.add_argument("--config", type=Path, help="JSON file of degradation ranges (a TrainConfig's degrade section "
                                               "or the section alone); default: Real-ESRGAN's")
    p.set_defaults(func=_handle_degrade)


def _register_pack(stages: argparse._SubParsersAction) -> None:
    text = ("a run's resumable state (config, latest checkpoint, best weights, history, progress log) as one file, "
            "and back")
    p = stages.add_parser("pack", help=text, description=text + ": continue it exactly on another machine with "
                          "`srgan train unpack FILE RUN_DIR`, then the run's command with --run-dir RUN_DIR --resume")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("output", type=Path, metavar="FILE", help="the tar file to write (e.g. model/weights/NAME.run.tar)")
    p.set_defaults(func=_handle_pack)
    u = stages.add_parser("unpack", help="lay a `srgan train pack` file out as a run directory to --resume")
    u.add_argument("packed", type=Path, metavar="FILE")
    u.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a new run directory")
    u.set_defaults(func=_handle_pack)


def _handle_pack(args: argparse.Namespace) -> int:
    from training.runpack import pack_run, unpack_run

    try:
        if args.stage == "pack":
            names = pack_run(args.run_dir, args.output)
            print(f"wrote {args.output}: {', '.join(names)}")
        else:
            name = unpack_run(args.packed, args.run_dir)
            print(f"{args.run_dir} holds {name}: continue with the run's command and --run-dir {args.run_dir} "
                  f"--resume")
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        return fail(str(exc), USAGE, command=f"train {args.stage}")
    return OK


def _register_release(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("release", help="ship a run as a packaged model (ONNX, card, resume weights)",
                              description="Export the run's best generator, measure it on the --bench folders and "
                                          "write <name>.onnx, <name>.card.json and <name>.resume.weights.h5 into --out "
                                          "(training.release).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--version", help="default: step-<best step>")
    p.add_argument("--bench", type=Path, nargs="+", required=True, help="benchmark folders to measure (not to pick)")
    p.add_argument("--out", type=Path, help="default: the package's model/weights")
    p.add_argument("--compare", type=Path, nargs="*", default=[], help="models measured beside it (.onnx)")
    p.add_argument("--detail-base", help="the PSNR model this GAN model blends with for `detail` (e.g. srresnet_x4)")
    p.add_argument("--denoise-base", help="the clean model this real-world model blends with for `denoise` (e.g. "
                                          "srresnet_x4 for realworld_x4)")
    p.set_defaults(func=_handle_release)


def _register_figures(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("figures", help="draw the training curve and comparison figures (training.figures)")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curve", help="validation PSNR against steps")
    c.add_argument("source", type=Path, help="run directory, validation.jsonl or a model card")
    c.add_argument("-o", "--output", type=Path, required=True)
    c.add_argument("--title")
    c.add_argument("--baseline", type=float, help="bicubic validation PSNR-Y to draw")
    s = sub.add_parser("compare", help="bicubic | model(s) | ground truth crop")
    s.add_argument("--model", type=Path, action="append", required=True, help="repeat for several models")
    s.add_argument("--detail", type=float, help="blend GAN models with their detail base at this value")
    s.add_argument("--image", type=Path, required=True, help="ground-truth HR image")
    s.add_argument("--box", type=int, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"), required=True)
    s.add_argument("--zoom", type=int, default=2)
    s.add_argument("-o", "--output", type=Path, required=True)
    d = sub.add_parser("pd-curve", help="PSNR against NIQE over detail values (srgan eval at each)")
    d.add_argument("--model", type=Path, required=True, help="a GAN model with a detail base")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--details", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    d.add_argument("--json", type=Path, help="also write the points here")
    d.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(func=_handle_figures)


# --- flags from the config models ------------------------------------------------


def _sections(stage: Stage) -> tuple[str, ...]:
    """The config sections a stage's flags come from: the gan section's settings mean nothing to pretraining."""
    return tuple(s for s in _SECTIONS if s != "gan" or stage == "gan")


def _fields(stage: Stage) -> Iterator[tuple[str, FieldInfo]]:
    """(dotted path, field) for every setting a flag of ``stage`` can change."""
    for name, field in TrainConfig.model_fields.items():
        if name not in _TOP_SKIP:
            yield name, field
    for section in _sections(stage):
        model = cast("type[BaseModel]", TrainConfig.model_fields[section].annotation)
        for name, field in model.model_fields.items():
            yield f"{section}.{name}", field


def _add_config_flags(parser: argparse.ArgumentParser, defaults: TrainConfig, stage: Stage) -> None:
    body = defaults.model_dump(mode="json")
    groups = {s: parser.add_argument_group(s) for s in ("run", *_sections(stage))}
    for dotted, field in _fields(stage):
        section, _, name = dotted.rpartition(".")
        default = body[section][name] if section else body[name]
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": "cfg__" + dotted.replace(".", "__"), "default": None}
        kwargs["help"] = _help(field.description or "", default)
        kwargs.update(_argparse_type(field.annotation))
        if "metavar" not in kwargs and "choices" not in kwargs and "action" not in kwargs:
            kwargs["metavar"] = name.upper()
        groups[section or "run"].add_argument(flag, **kwargs)


def _help(description: str, default: Any) -> str:
    """A flag's help with its default stated once: not when the description says it, nor when there is none."""
    if default is None or "default" in description:
        return description
    return f"{description} (default: {default})".strip()


def _argparse_type(annotation: Any) -> dict[str, Any]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _argparse_type(args[0])
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        return {"nargs": len(args), "type": args[0], "metavar": ("LOW", "HIGH")}
    if origin is list:
        return {"nargs": "+", "type": args[0]}
    if annotation is Path:
        return {"type": str, "metavar": "PATH"}
    return {"type": annotation}


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key[len("cfg__") :].replace("__", "."): value
        for key, value in vars(args).items()
        if key.startswith("cfg__") and value is not None
    }


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the saved run (``--resume``), then ``--config``, then flags."""
    overrides = load_overrides_file(args.config) if args.config else {}
    overrides.update(_flag_overrides(args))
    base = default_config(args.stage)
    run_dir = Path(overrides.get("run_dir", base.run_dir))
    saved = run_dir / "config.json"
    if args.resume and saved.is_file():
        base = TrainConfig.load(saved)
        if base.stage != args.stage:
            raise ValueError(f"{run_dir} is a {base.stage} run, not {args.stage}")
    return merge(base, overrides)


def one_line(exc: ValidationError) -> str:
    """A configuration error as one line naming the flags (``--warmup-steps: ...``), not pydantic's dump."""
    parts = []
    for error in exc.errors():
        names = [str(x) for x in error["loc"] if not isinstance(x, int)]
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"--{names[-1].replace('_', '-')}: {message}" if names else message)
    return "; ".join(parts)


# --- handlers ------------------------------------------------------------------------


def _setup_logging() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("training").setLevel(logging.INFO)


def _handle_train(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        config = resolve_config(args)
    except ValidationError as exc:
        return fail(one_line(exc), USAGE, command="train")
    except (ValueError, KeyError, OSError) as exc:
        return fail(str(exc), USAGE, command="train")
    if args.print_config:
        print(config.to_json())
        return OK
    from training.losses import VggWeightsMissing  # start-up: TensorFlow
    from training.trainer import RunExists, train  # start-up: TensorFlow

    try:
        result = train(config, resume=args.resume)
    except (RunExists, VggWeightsMissing, FileNotFoundError, ValueError) as exc:
        return fail(error_text(exc), USAGE, command="train")
    best = (f"best validation NIQE {-result.best_psnr_y:.3f} (within the PSNR floor)" if config.stage == "gan"
            else f"best validation PSNR-Y {result.best_psnr_y:.3f} dB")
    logging.getLogger(__name__).info(
        "%s at step %d; %s; %s", "stopped" if result.interrupted else "finished", result.step, best, result.run_dir
    )
    return INTERRUPTED if result.interrupted else OK


def _handle_degrade(args: argparse.Namespace) -> int:
    try:
        paths = list_images(args.input) if args.input.is_dir() else [args.input]
        if not args.input.exists():
            raise FileNotFoundError(f"{args.input} does not exist: name an image or a folder of images")
        if not paths:
            raise FileNotFoundError(f"no images under {args.input}")
        cfg = DegradeConfig()
        if args.config:
            body = json.loads(args.config.read_text())
            cfg = DegradeConfig.model_validate(body.get("degrade", body))
        rows = write_examples(paths, args.output, args.seed, args.count, args.scale, cfg)
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc), USAGE, command="train degrade")
    for row in rows:
        print(f"{args.output / str(row['file'])}: {', '.join(map(str, cast(list, row['applied'])))}")
    return OK


def _handle_export(args: argparse.Namespace) -> int:
    prefix = Path(f"{args.source}.index").is_file()  # a checkpoint (runs/x/checkpoints/ckpt-3500) is no file itself
    missing = missing_path(None if prefix else args.source, args.eval_data)
    if missing:
        return fail(missing, USAGE, command="export")
    _setup_logging()
    from training.export import ExportError, export_generator  # start-up: TensorFlow

    try:
        card = export_generator(
            args.source,
            args.output,
            name=args.name,
            version=args.version,
            arch={k: v for k, v in {"arch": args.arch, "scale": args.scale, "filters": args.filters,
                                    "blocks": args.blocks}.items() if v},
            opset=args.opset,
            tolerance=args.tolerance,
            eval_data=args.eval_data,
        )
    except (ExportError, DeployRefused, FileNotFoundError, ValueError) as exc:
        return fail(error_text(exc), command="export")
    if args.detail_base:
        card["detail_base"] = args.detail_base
        card_path_for(args.output).write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.output} (parity max |diff| {card['parity']['max_abs_diff']:.4f}) "
          f"and {card_path_for(args.output)}")
    evaluation = card.get("evaluation") or {}
    for key, value in card.get("metrics", {}).items():
        metric = next((m for m in ("psnr_y", "ssim_y") if key.endswith(m)), key)
        baseline = evaluation.get(f"bicubic_{metric}")
        print(f"{key}: {value:.4f}" + (f" (bicubic {baseline:.4f})" if baseline is not None else ""))
    if not args.publish:
        return OK

    return publish_and_report(None, args.output, args.publish, card=card, force=args.force,
                              source=f"srgan export: {args.output}")


def _handle_eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_model, format_table  # start-up: onnx, Pillow and the engine

    missing = missing_path(args.model, args.data)
    if missing:
        return fail(missing, USAGE, command="eval")
    try:
        report = evaluate_model(args.model, args.data, scale=args.scale, tile=args.tile, detail=args.detail,
                                niqe=not args.no_niqe, condition=args.condition)
    except (FileNotFoundError, ValueError, SRGANError) as exc:
        return fail(error_text(exc), USAGE, command="eval")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return OK


def _handle_release(args: argparse.Namespace) -> int:
    missing = missing_path(args.run_dir, *args.bench, *args.compare)
    if missing:
        return fail(missing, USAGE, command="release")
    _setup_logging()
    from training.export import ExportError  # start-up: TensorFlow
    from training.release import WEIGHTS_DIR, release  # start-up: TensorFlow

    try:
        card = release(args.run_dir, args.name, args.version, args.bench, args.out or WEIGHTS_DIR,
                       compare=args.compare, detail_base=args.detail_base, denoise_base=args.denoise_base)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        return fail(error_text(exc), command="release")
    print(json.dumps({"version": card["version"], "metrics": card["metrics"], "resume": card["resume"]}, indent=2))
    return OK


def _handle_figures(args: argparse.Namespace) -> int:
    given = [args.source] if args.what == "curve" else [*args.model, args.image] if args.what == "compare" \
        else [args.model, args.data]
    missing = missing_path(*given)
    if missing:
        return fail(missing, USAGE, command="figures")
    # start-up: numpy, Pillow, matplotlib and the engine
    from training.figures import detail_sweep, perception_distortion, plot_curve, side_by_side  # matplotlib

    try:
        if args.what == "curve":
            print(plot_curve(args.source, args.output, args.title, args.baseline))
        elif args.what == "pd-curve":
            points = detail_sweep(args.model, args.data, args.details)
            if args.json:
                args.json.write_text(json.dumps(points, indent=2) + "\n")
            print(json.dumps(points, indent=2))
            print(perception_distortion(points, args.output, f"{args.model.stem} on {args.data.name}"))
        else:
            print(json.dumps(side_by_side(args.model, args.image, tuple(args.box), args.output, args.zoom,
                                          args.detail)))
    except (FileNotFoundError, ValueError) as exc:
        return fail(error_text(exc), command="figures")
    return OK
