"""``srgan bench engine --candidates``: the fast-tier table with trained files, its Set5/Set14 columns and issue
23's verdicts, on real ONNX models and real engines (tiny ones)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from bench.engine import FAST_TIER, bench_candidates, fast_tier_verdicts, set_psnr
from bench.tiny_models import make_nearest_model, make_srresnet_model
from core.catalog.load import open_engine
from core.settings import Settings

pytestmark = pytest.mark.integration


def _row(**over: float | str) -> dict:
    row = {"model": "compact_x4", "model_kind": "trained", "asked": "f32", "runs": "f32", "flops_vs_reference": 0.28,
           "throughput_vs_reference": 3.4, "set5_vs_reference_db": -0.2, "set14_vs_reference_db": -0.25}
    return {**row, **over}


def test_verdicts_follow_the_issues_three_bounds():
    assert fast_tier_verdicts([_row()])[0].startswith("PASS compact_x4 at f32")
    for bad in ({"flops_vs_reference": 0.31}, {"throughput_vs_reference": 2.9}, {"set5_vs_reference_db": -0.31},
                {"set14_vs_reference_db": -0.35}):
        line = fast_tier_verdicts([_row(**bad)])[0]
        assert line.startswith("FAIL"), (bad, line)
    edge = _row(flops_vs_reference=FAST_TIER["flops_vs_reference"], set5_vs_reference_db=-FAST_TIER["psnr_within_db"],
                throughput_vs_reference=FAST_TIER["throughput_vs_reference"])
    assert fast_tier_verdicts([edge])[0].startswith("PASS")  # the bounds are inclusive: "<= 0.3x", ">= 3x"
    assert fast_tier_verdicts([_row(model_kind="untrained"), _row(model_kind="reference")]) == []
    unmeasured = {k: v for k, v in _row().items() if k != "set14_vs_reference_db"}  # --quick or no Set14 folder
    assert fast_tier_verdicts([unmeasured])[0].startswith("INCOMPLETE") and "Set14 not measured" in \
        fast_tier_verdicts([unmeasured])[0]
    assert fast_tier_verdicts([{**unmeasured, "throughput_vs_reference": 2.0}])[0].startswith("FAIL")


def test_trained_file_gets_its_quality_beside_the_reference(tmp_path):
    reference = make_srresnet_model(tmp_path / "ref.onnx", blocks=1, filters=8)
    candidate = make_nearest_model(tmp_path / "nearest_x4.onnx", scale=4)
    rng = np.random.default_rng(0)
    sets = {}
    for name in ("Set5", "Set14"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        sets[name] = folder
    args = argparse.Namespace(backend="onnxruntime", precisions="f32", precision_size=24, repeat=1, quick=False,
                              set5=sets["Set5"], set14=sets["Set14"])
    report = bench_candidates(reference, [str(candidate)], args, tmp_path)

    assert report["errors"] == {}
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"ref", "nearest_x4"}
    assert rows["nearest_x4"]["model_kind"] == "trained" and rows["ref"]["model_kind"] == "reference"
    assert rows["ref"]["flops_vs_reference"] == 1.0 and rows["nearest_x4"]["flops_vs_reference"] < 0.1
    d = Settings()
    for name, folder in sets.items():  # the same measurement done independently
        ref = set_psnr(open_engine(d, reference, backend="onnxruntime", precision="f32", tile=0), folder)
        got = set_psnr(open_engine(d, candidate, backend="onnxruntime", precision="f32", tile=0), folder)
        assert ref is not None and got is not None
        key = name.lower()
        assert rows["nearest_x4"][f"{key}_psnr_y"] == pytest.approx(np.mean(list(got.values())), abs=1e-3)
        assert rows["nearest_x4"][f"{key}_vs_reference_db"] == pytest.approx(
            np.mean(list(got.values())) - np.mean(list(ref.values())), abs=2e-3)
    assert len(report["verdicts"]) == 1 and "nearest_x4 at f32" in report["verdicts"][0]


def test_a_missing_candidate_file_is_named(tmp_path):
    args = argparse.Namespace(backend="onnxruntime", precisions="f32", precision_size=24, repeat=1, quick=True,
                              set5=None, set14=None)
    reference = make_nearest_model(tmp_path / "ref.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        bench_candidates(reference, [str(tmp_path / "missing.onnx")], args, tmp_path)
