"""``srgan deploy``, ``srgan models`` and ``srgan rollback``: the model registry from the command line.

They change the registry in ``SRGAN_MODELS_DIR`` (default ``<data_dir>/models``)
and announce the change on the service's Redis so running workers use the new
active version for their next job (``core.model_updates``). With the job files on
an object store (``SRGAN_STORAGE_URL=s3://...``) they first sync the local registry
from the store's and push the change to it before announcing (``core.registry_sync``),
so workers on every host find the new version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="check an ONNX model, publish it to the registry and make it active",
                       description="Check FILE (it loads, a small image comes out at the declared scale, its "
                                   "sha256 is its card's), copy it into the registry as NAME:VERSION with its "
                                   "card, make it active and tell the workers. A file that fails a check is "
                                   "refused and the active version stays as it was.")
    p.add_argument("file", type=Path, metavar="FILE.onnx", help="the model file")
    p.add_argument("--name", required=True, help="model name, e.g. srresnet_x4")
    p.add_argument("--version", help="version (default: the card's or file's, else the next number)")
    p.add_argument("--card", type=Path, help="model card (default: <stem>.card.json, <stem>.json or a "
                                             "card.json naming the file, beside it)")
    p.add_argument("--scale", type=int, help="the scale, for a file with neither srgan contract nor card")
    p.add_argument("--no-activate", dest="activate", action="store_false",
                   help="publish only; make it active later with `srgan rollback NAME --to VERSION`")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_deploy)

    p = sub.add_parser("models", help="list the registry's models and versions",
                       description="Names, versions, which is active, scale and measured quality.")
    p.add_argument("--json", action="store_true", help="print what GET /v1/models answers")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_models)

    p = sub.add_parser("rollback", help="make the previously active version of a model active again",
                       description="Make the version that was active before the current one active again "
                                   "(or --to VERSION), and tell the workers.")
    p.add_argument("name", help="model name")
    p.add_argument("--to", metavar="VERSION", help="activate this published version instead")
    p.add_argument("--models-dir", type=Path, help="registry folder (default SRGAN_MODELS_DIR)")
    p.set_defaults(func=run_rollback)


def _settings(args: argparse.Namespace):  # noqa: ANN202
    from core.settings import get_settings

    settings = get_settings()
    if args.models_dir is not None:
        settings = settings.model_copy(update={"models_dir": args.models_dir})
    return settings


def _fail(command: str, message: str) -> int:
    print(f"srgan {command}: error: {message}", file=sys.stderr)
    return 1


def run_deploy(args: argparse.Namespace) -> int:
    from core import registry_sync
    from core.catalog import registry_of, seed_registry
    from core.model_updates import announce_change
    from model.deploy import deploy_model
    from model.errors import ModelError
    from model.registry import read_card

    settings = _settings(args)
    seed_registry(settings)
    registry = registry_of(settings)
    before = None
    try:
        registry_sync.pull(settings)  # with an object store: start from the registry every host shares
        before = registry.active_version(args.name)
        card = read_card(args.card) if args.card else None
        published = deploy_model(registry, args.file, name=args.name, version=args.version, card=card,
                                 scale=args.scale, activate=args.activate)
        registry_sync.push(settings, args.name)  # before the announcement: workers pull what it names
    except ModelError as exc:
        kept = f"; the active version of {args.name} is still {before}" if before else ""
        return _fail("deploy", f"{exc.message}{kept}")
    except OSError as exc:
        return _fail("deploy", f"the object store failed: {exc}")
    check = (published.card.get("registry") or {}).get("check", "")
    print(f"published {published.ref} (x{published.scale}, sha256 {published.card['sha256'][:12]}..., "
          f"check: {check}) in {registry.root / args.name / published.version}")
    if not args.activate:
        print(f"not activated; the active version of {args.name} is still {before}")
        return 0
    print(f"{args.name}: active version {before} -> {published.version}")
    print(announce_change(settings, args.name, published.version))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from core import registry_sync
    from core.catalog import registry_of
    from core.model_updates import announce_change
    from model.errors import ModelError

    settings = _settings(args)
    registry = registry_of(settings)
    try:
        registry_sync.pull(settings)
        before = registry.active_version(args.name)
        now = registry.rollback(args.name, to=args.to)
        registry_sync.push(settings, args.name)
    except ModelError as exc:
        return _fail("rollback", exc.message)
    except OSError as exc:
        return _fail("rollback", f"the object store failed: {exc}")
    print(f"{args.name}: active version {before} -> {now.version}")
    print(announce_change(settings, args.name, now.version))
    return 0


def run_models(args: argparse.Namespace) -> int:
    from core import registry_sync
    from core.catalog import models_listing
    from core.model_updates import service_engines
    from model.errors import ModelError

    settings = _settings(args)
    try:
        registry_sync.pull(settings)  # with an object store: list what every host runs
    except OSError as exc:
        print(f"could not sync the registry from the object store ({exc}); listing this host's", file=sys.stderr)
    try:
        listing = models_listing(settings, service_engines(settings))
    except ModelError as exc:
        listing = {"models": [], "precision": settings.precision}
        if args.json:
            return _fail("models", exc.message)
        print(f"no models: {exc.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    rows = [("NAME", "VERSION", "ACTIVE", "SCALE", "PRECISION", "QUALITY", "PUBLISHED")]
    for m in listing["models"]:
        quality = ", ".join(f"{k} {v:.4g}" for k, v in m["metrics"].items()) or "-"
        active = "active" + (", default" if m["default"] else "") if m["active"] else ""
        if m["source"] == "file":
            active += " (file, not in the registry)"
        rows.append((m["name"], m["version"] or "-", active, f"x{m['scale']}" if m["scale"] else "?",
                     m["precision"] or "-", quality, m["published_at"] or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nprecision: {settings.precision} ({_auto_here()}); PRECISION: what a worker last loaded it in")
    return 0


def _auto_here() -> str:
    """What ``auto`` picks on this machine's CPU (a GPU worker picks f16)."""
    from model.backends import BF16_CPU_FLAGS, cpu_flags, cpu_model, native_precision, openvino_available

    flags = cpu_flags()
    has = [f for f in BF16_CPU_FLAGS if f in flags]
    backend = "openvino:CPU" if openvino_available() else "onnxruntime:CPUExecutionProvider"
    return (f"auto on this machine's CPU, {cpu_model()}: {native_precision(backend)} with {backend.split(':')[0]}; "
            f"bfloat16 units: {', '.join(has) or 'none'}")
