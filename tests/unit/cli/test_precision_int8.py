"""``srgan upscale --precision int8`` and ``SRGAN_PRECISION=int8``: accepted on a CPU with int8 units (the
real engine quantizes and runs the network), refused with one clear error on a CPU without them.

Only the CPU's feature detection is simulated (``model.backends.cpu_flags``); the command runs in this
process so that the simulation reaches it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_srresnet_model
from cli import exits
from cli.main import main
from core.settings import Settings, get_settings
from model import backends, engine

pytestmark = pytest.mark.unit

WITH_INT8 = {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}
WITHOUT_INT8 = {"sse4_2", "avx"}  # before AVX2: int8 slower than float32 with either runtime


@pytest.fixture
def setup(tmp_path, monkeypatch):
    for key in ("SRGAN_PRECISION", "SRGAN_MODELS_DIR", "SRGAN_REDIS_URL", "SRGAN_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    model = make_srresnet_model(tmp_path / "sr.onnx", scale=2, blocks=2, filters=16)
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(src)
    yield model, src
    get_settings.cache_clear()


def cpu(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(backends, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(engine, "cpu_flags", lambda: set(flags))


def test_int8_is_refused_on_a_cpu_without_int8_units(setup, tmp_path, monkeypatch, capsys):
    model, src = setup
    cpu(monkeypatch, WITHOUT_INT8)
    dst = tmp_path / "out.png"
    rc = main(["upscale", str(src), "-o", str(dst), "--model", str(model), "--precision", "int8"])
    err = capsys.readouterr().err
    assert rc == exits.USAGE, err
    assert "int8 needs a CPU with int8 units (amx_int8, avx512_vnni, avx_vnni; or avx2 with OpenVINO)" in err
    assert "use --precision auto, bf16 or f32" in err
    assert not dst.exists()
    monkeypatch.setenv("SRGAN_PRECISION", "int8")  # the setting is refused the same way
    get_settings.cache_clear()
    assert main(["upscale", str(src), "-o", str(dst), "--model", str(model)]) == exits.USAGE
    assert "int8 needs a CPU" in capsys.readouterr().err


def test_int8_is_accepted_and_runs_on_a_cpu_with_int8_units(setup, tmp_path, monkeypatch, capsys):
    model, src = setup
    cpu(monkeypatch, WITH_INT8)
    dst = tmp_path / "out.png"
    rc = main(["upscale", str(src), "-o", str(dst), "--model", str(model), "--precision", "int8",
               "--backend", "openvino", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert Image.open(dst).size == (40, 48)
    assert list((tmp_path / "data" / "cache" / "int8").glob("*.onnx")), "the int8 graph kept in the compile cache"


def test_the_setting_takes_int8():
    assert Settings(_env_file=None, precision="int8").precision == "int8"
    with pytest.raises(ValueError, match="int4"):
        Settings(_env_file=None, precision="int4")
