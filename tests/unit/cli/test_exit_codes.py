"""``srgan --help``'s exit-code table holds for every command's documented paths (the real command, run as a
process); an error names the file and what to do, never ``[Errno N] ...``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_nearest_model
from cli import exits

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exits")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "notimage.png").write_text("hello, I am not an image\n")
    (root / "garbage.onnx").write_bytes(b"not an onnx model" * 10)
    (root / "afile").write_text("a file, not a folder\n")
    (root / "data").mkdir()
    make_nearest_model(root / "nearest_x4.onnx", scale=4)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# (why, arguments ({d} is the test folder), expected exit code, words the error must name)
TABLE = [
    ("upscale: done", ["upscale", "{d}/a.png", "-o", "{d}/out/a.png"], exits.OK, []),
    ("upscale: a missing input file", ["upscale", "{d}/missing.png"], exits.USAGE, ["missing.png", "check the path"]),
    ("upscale: one of the inputs missing", ["upscale", "{d}/a.png", "{d}/gone.jpg"], exits.USAGE, ["gone.jpg"]),
    ("upscale: not an image", ["upscale", "{d}/notimage.png", "-o", "{d}/out/n.png"], exits.FAILED,
     ["notimage.png"]),
    ("upscale: the output cannot be written", ["upscale", "{d}/a.png", "-o", "{d}/afile/x.png"], exits.FAILED,
     ["afile", "choose another path"]),
    ("upscale: bad argument value", ["upscale", "{d}/a.png", "--quality", "0"], exits.USAGE, ["--quality"]),
    ("upscale: unknown flag", ["upscale", "{d}/a.png", "--bogus"], exits.USAGE, ["--bogus"]),
    ("upscale: a missing model", ["upscale", "{d}/a.png", "--model", "{d}/missing.onnx"], exits.USAGE,
     ["missing.onnx"]),
    ("upscale: no server there", ["upscale", "{d}/a.png", "--server", "http://127.0.0.1:{port}"], exits.USAGE,
     ["cannot reach"]),
    ("deploy: a missing file", ["deploy", "{d}/missing.onnx", "--name", "m", "--models-dir", "{d}/reg"],
     exits.USAGE, ["missing.onnx", "check the path"]),
    ("deploy: a refused file", ["deploy", "{d}/garbage.onnx", "--name", "m", "--models-dir", "{d}/reg"],
     exits.FAILED, ["garbage.onnx"]),
    ("models: listed", ["models", "--models-dir", "{d}/reg"], exits.OK, []),
    ("rollback: an unknown model", ["rollback", "nosuch", "--models-dir", "{d}/reg"], exits.USAGE, ["nosuch"]),
    ("rollback: nothing earlier", ["rollback", "srresnet_x4", "--models-dir", "{d}/reg"], exits.FAILED,
     ["srresnet_x4"]),
    ("key: done", ["key", "alice"], exits.OK, []),
    ("key: a bad name", ["key", "bad name!"], exits.USAGE, []),
    ("worker: no Redis configured", ["worker"], exits.USAGE, ["SRGAN_REDIS_URL"]),
    ("serve: exposed without keys", ["serve", "--host", "0.0.0.0"], exits.USAGE, ["--insecure"]),
    ("eval: a missing model", ["eval", "--model", "{d}/missing.onnx", "--data", "{d}/data"], exits.USAGE,
     ["missing.onnx", "check the path"]),
    ("export: a missing run", ["export", "{d}/no_run", "-o", "{d}/x.onnx"], exits.USAGE, ["no_run", "check the path"]),
    ("release: a missing run", ["release", "{d}/no_run", "--name", "x", "--bench", "{d}/data"], exits.USAGE,
     ["no_run"]),
    ("figures: a missing source", ["figures", "curve", "{d}/no_run", "-o", "{d}/c.png"], exits.USAGE, ["no_run"]),
    ("train: no stage", ["train"], exits.USAGE, []),
    ("bench: no benchmark", ["bench"], exits.USAGE, []),
    ("bench: a missing model", ["bench", "engine", "--model", "{d}/missing.onnx", "--quick"], exits.USAGE,
     ["missing.onnx", "check the path"]),
    ("bench: a model that is not one", ["bench", "engine", "--model", "{d}/garbage.onnx", "--quick"], exits.FAILED,
     ["garbage.onnx"]),
    ("no command", [], exits.USAGE, []),
]


@pytest.mark.parametrize(("why", "argv", "code", "named"), TABLE, ids=[row[0] for row in TABLE])
def test_exit_code_table(place, why, argv, code, named):
    assert code in exits.EXIT_CODES
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
    env.update(SRGAN_DATA_DIR=str(place / "data_dir"), SRGAN_MODEL=str(place / "nearest_x4.onnx"),
               SRGAN_BACKEND="onnxruntime", SRGAN_TILE="32")
    args = [a.format(d=place, port=free_port()) for a in argv]
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[3])
    assert done.returncode == code, f"{why}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    for word in named:
        assert word in done.stderr, f"{why}: {word!r} not in {done.stderr!r}"


def test_help_lists_every_code():
    done = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[3])
    assert done.returncode == exits.OK
    for code in exits.EXIT_CODES:
        assert f"  {code} " in done.stdout


def test_interrupted_is_130(monkeypatch, capsys):
    from cli import key, main

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(key, "run", interrupted)
    assert main.main(["key", "alice"]) == exits.INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


def test_an_os_error_is_one_sentence():
    text = exits.describe_os_error(FileNotFoundError(2, "No such file or directory", "photo.png"))
    assert text == "photo.png: no such file or folder; check the path"

