"""A run's state as one file, to continue it exactly on another machine (tarfile; no TensorFlow).

A background run stops with its machine. ``pack_run`` puts what ``--resume``
needs into one tar file: ``config.json``, the latest checkpoint (networks,
optimisers, step, best score: ``training.checkpoint.Checkpointer``), the best
weights, the validation history and the progress log (``train.log``: every
segment's lines so far, which the card's wall time is summed from). ``unpack_run`` lays it out as a run
directory again, so that ``srgan train ... --run-dir DIR --resume`` continues
at the same step with the same optimiser state and the same crop stream (crop
``i`` is a function of the seed and ``i``): what an uninterrupted run would
have done. This is the one resume file a model in training keeps in git
(``model/weights/<name>.run.tar``).
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

_KEPT = ("config.json", "best.weights.h5", "best.json", "validation.jsonl")
LOG = "train.log"


def run_log_lines(run_dir: Path) -> list[str]:
    """The run's log lines: ``train.log`` in the run directory (what a pack carried: earlier segments) and
    ``<run>.log`` beside it (where ``nohup ... >> runs/<run>.log`` writes), merged in time order, each line once
    (a segment packed twice, or a log kept beside a run unpacked again, is not counted twice)."""
    run_dir = Path(run_dir)
    lines: set[str] = set()
    for path in (run_dir / LOG, run_dir.parent / f"{run_dir.name}.log"):
        if path.is_file():
            lines.update(line for line in path.read_text(errors="replace").splitlines() if line.strip())
    return sorted(lines, key=lambda line: line[:23])  # "2026-12-08 03:25:53,682": the logging timestamp


def latest_checkpoint(run_dir: Path) -> str:
    """The newest checkpoint's prefix name in ``run_dir/checkpoints`` (``ckpt-1000``)."""
    state = Path(run_dir) / "checkpoints" / "checkpoint"
    if not state.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet (no {state})")
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(), re.M)
    if match is None:
        raise ValueError(f"{state} names no checkpoint")
    return Path(match[1]).name


def pack_run(run_dir: Path, out: Path) -> list[str]:
    """Write ``run_dir``'s resumable state to the tar file ``out``; the names it holds."""
    run_dir = Path(run_dir)
    prefix = latest_checkpoint(run_dir)
    files = [run_dir / name for name in _KEPT if (run_dir / name).is_file()]
    files += sorted((run_dir / "checkpoints").glob(f"{prefix}.*"))
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json: not a run directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    names = []
    with tarfile.open(tmp, "w") as tar:
        for path in files:
            name = path.relative_to(run_dir).as_posix()
            tar.add(path, arcname=name)
            names.append(name)
        log = "".join(line + "\n" for line in run_log_lines(run_dir)).encode()
        if log:
            info = tarfile.TarInfo(LOG)
            info.size = len(log)
            tar.addfile(info, io.BytesIO(log))
            names.append(LOG)
        state = f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'.encode()
        info = tarfile.TarInfo("checkpoints/checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))
        names.append(info.name)
    tmp.replace(out)
    return names


def unpack_run(packed: Path, run_dir: Path) -> str:
    """Lay ``packed`` out as ``run_dir`` (refused when it already holds a checkpoint); the checkpoint's name."""
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "checkpoint").exists():
        raise FileExistsError(f"{run_dir} already holds checkpoints: unpack into a new run directory")
    with tarfile.open(packed) as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                raise ValueError(f"{packed}: unexpected entry {member.name!r}")
        tar.extractall(run_dir, filter="data")
    return latest_checkpoint(run_dir)
