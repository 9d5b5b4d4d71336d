"""``tile="auto"`` on a GPU: the network's budget is half the GPU's free memory, the output strips stay in host
memory within the host budget. Arithmetic only (no GPU here); ``bench/gpu_check.sh`` runs it on one."""

from __future__ import annotations

import shutil

import pytest

from model.backends import (
    GPU_MEMORY_BUDGET_FRACTION,
    GPU_PROVIDERS,
    device_memory_budget,
    gpu_free_memory,
    is_gpu_backend,
    ort_gpu_build,
    parse_free_mib,
    visible_gpu,
)
from model.tiling import MIN_AUTO_TILE, STRIP_BYTES_PER_OUTPUT_PIXEL, axis_windows, choose_tiles

pytestmark = pytest.mark.unit


def test_gpu_backends_are_recognised_by_name() -> None:
    assert is_gpu_backend("onnxruntime:CUDAExecutionProvider")
    assert is_gpu_backend("onnxruntime:TensorrtExecutionProvider")
    assert is_gpu_backend("openvino:GPU.0")
    assert not is_gpu_backend("onnxruntime:CPUExecutionProvider")
    assert not is_gpu_backend("openvino:CPU")


def test_a_gpu_build_of_onnxruntime_is_told_by_its_provider_libraries(tmp_path) -> None:
    """``backend=auto`` asks whether ONNX Runtime has a GPU provider without importing it: the installed build
    answers as its own provider list does, and a ``capi`` folder with the CUDA or TensorRT provider library (Linux
    or Windows names) is a GPU build."""
    import onnxruntime as ort
    assert ort_gpu_build() == any(p in ort.get_available_providers() for p in GPU_PROVIDERS)
    for name in ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_tensorrt.dll"):
        capi = tmp_path / name.split(".")[0]
        capi.mkdir()
        (capi / "libonnxruntime_providers_shared.so").touch()
        assert not ort_gpu_build(capi)
        (capi / name).touch()
        assert ort_gpu_build(capi)
    assert not ort_gpu_build(tmp_path / "missing")


def test_visible_gpu_follows_cuda_visible_devices() -> None:
    assert visible_gpu({}) == "0"
    assert visible_gpu({"CUDA_VISIBLE_DEVICES": "3,1"}) == "3"
    assert visible_gpu({"CUDA_VISIBLE_DEVICES": "GPU-8a1e,GPU-77"}) == "GPU-8a1e"
    assert visible_gpu({"CUDA_VISIBLE_DEVICES": ""}) == "0"


def test_nvidia_smi_free_memory_is_read_in_mib() -> None:
    assert parse_free_mib("80614\n") == 80614 * 2**20
    assert parse_free_mib("\n  1024 \n2048\n") == 1024 * 2**20
    assert parse_free_mib("[N/A]\n") is None
    assert parse_free_mib("") is None


def test_device_budget_is_half_the_free_gpu_memory() -> None:
    free = 40 * 2**30
    assert device_memory_budget("onnxruntime:CUDAExecutionProvider", free=free) == int(free * 0.5)
    assert GPU_MEMORY_BUDGET_FRACTION == 0.5
    assert device_memory_budget("onnxruntime:CUDAExecutionProvider", free=2**20) == 64 * 2**20  # floor
    assert device_memory_budget("onnxruntime:CPUExecutionProvider", free=free) is None  # a CPU: host rule


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is here")
def test_without_nvidia_smi_the_free_gpu_memory_is_unknown() -> None:
    assert gpu_free_memory() is None
    assert device_memory_budget("onnxruntime:CUDAExecutionProvider") is None


def test_gpu_tiles_fit_the_device_budget_and_the_host_strip_budget() -> None:
    per_px, scale, overlap = 1152, 4, 8
    device, host = 20 * 2**30, 2**30
    tiles = choose_tiles(4096, 4096, scale, overlap, device, per_px, strip_budget=host)
    (nh, wh), (nw, ww) = axis_windows(4096, tiles[0], overlap), axis_windows(4096, tiles[1], overlap)
    # the network's memory of one window fits the device budget; the output strip fits the host budget
    assert wh * ww * scale * scale * per_px <= device
    assert wh * scale * 4096 * scale * STRIP_BYTES_PER_OUTPUT_PIXEL <= host
    # far fewer windows than the CPU's plan under the host budget alone (~1 GiB for network and strip together)
    (ch, _), (cw, _) = (axis_windows(4096, t, overlap) for t in choose_tiles(4096, 4096, scale, overlap, host, per_px))
    assert nh * nw * 4 <= ch * cw
    # a 1024x1024 image whose network fits 20 GiB runs whole when its output strip fits the host too
    assert choose_tiles(1024, 1024, scale, overlap, device, per_px, strip_budget=host) == (0, 0)
    assert choose_tiles(1024, 1024, scale, overlap, device, per_px, strip_budget=host // 4) != (0, 0)
    # a GPU with little free memory still gets a workable tile
    assert choose_tiles(4096, 4096, scale, overlap, 2**20, per_px, strip_budget=host) == (MIN_AUTO_TILE,) * 2


def test_onnxruntime_version_is_read_without_importing_it_and_agrees() -> None:
    """The int8 cache key's runtime version comes from the installed distribution's metadata (no import on a warm
    start), and it is the version the module reports."""
    import onnxruntime as ort

    from model.backends import runtime_version

    assert runtime_version("onnxruntime") == f"onnxruntime-{ort.__version__}"


def test_openvino_is_imported_without_its_model_converter_which_still_resolves_on_use() -> None:
    """Start-up (issue 23): ``runtime("openvino")`` skips ``openvino.tools.ovc`` (converter, telemetry, absl,
    urllib: half of OpenVINO's import), and ``openvino.convert_model`` and an explicit import of the converter
    still work afterwards for whoever needs them (NNCF, a user's script)."""
    import subprocess
    import sys

    pytest.importorskip("openvino")
    code = (
        "import sys\nfrom model.backends import OPENVINO_CONVERTER, runtime\n"
        "ov = runtime('openvino')\n"
        "assert OPENVINO_CONVERTER not in sys.modules and 'openvino_telemetry' not in sys.modules\n"
        "assert 'CPU' in ov.Core().available_devices\n"
        "import openvino\nassert openvino is ov and callable(openvino.convert_model)\n"
        "from openvino.tools.ovc import convert_model\nassert convert_model is openvino.convert_model\n"
        "try:\n    openvino.no_such_thing\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "no attribute 'no_such_thing'" in res.stdout
