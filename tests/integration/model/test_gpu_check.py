"""`srgan bench gpu-check` (bench/gpu_check): the script parses, and its Python half runs end to end (CPU here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import peak_tflops

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_peaks_are_looked_up_by_the_most_specific_name():
    assert peak_tflops("NVIDIA H100 PCIe, 81559 MiB, 550.54") == (51.0, 756.0)
    assert peak_tflops("NVIDIA H100 80GB HBM3, 81559 MiB, 550.54") == (67.0, 989.0)
    assert peak_tflops("NVIDIA H200, 143771 MiB") == (67.0, 989.0)
    assert peak_tflops("NVIDIA A10G") == (31.2, 70.0)
    assert peak_tflops("Some Future GPU") is None


def test_shell_script_is_valid_bash_and_strict():
    text = (REPO / "bench" / "gpu_check.sh").read_text()
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")]).returncode == 0


def test_python_half_measures_a_provider_and_reports(tmp_path):
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "cli.main", "bench", "gpu-check", "--providers",
                          "CPUExecutionProvider,CUDAExecutionProvider", "--sizes", "24,48", "--tile", "24",
                          "--repeat", "1", "--json", str(report)], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["providers"]["CPUExecutionProvider"] == "loads"
    assert data["providers"]["CUDAExecutionProvider"] != "loads"  # no GPU on the test machine
    runs = {(r["precision"], r["size"]): r for r in data["runs"]}
    assert set(runs) == {("f32", 24), ("f32", 48), ("f16", 24), ("f16", 48)}
    assert runs[("f32", 24)]["psnr_vs_cpu_db"] == float("inf")  # the same provider as the reference
    assert runs[("f16", 24)]["psnr_vs_cpu_db"] >= 40 and runs[("f16", 48)]["psnr_vs_f32_db"] >= 40
    assert all(r["gflops"] > 0 for r in runs.values())
