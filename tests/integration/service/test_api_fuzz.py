"""A bounded schemathesis run, every check, against the served app (real Redis, a real worker): the
answers match the OpenAPI document, no 5xx, bad input refused, documented input accepted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 6
"""Per operation and phase: the whole run stays under a minute on a 2-core machine."""


def test_api_conforms_to_its_openapi_document(service, tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    argv = [str(st), "--config-file", str(CONFIG), "run", f"{service.api.url}/openapi.json", "--checks", "all",
            "--exclude-checks", "use_after_free",  # DELETE cancels, it does not delete: see schemathesis.toml
            "--max-examples",
            str(MAX_EXAMPLES), "--seed", "1", "--generation-deterministic", "--max-time", "25",
            "--request-timeout", "30", "--no-color", "--wait-for-schema", "10"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=tmp_path,  # noqa: S603
                            env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 100, report
    assert "❌" not in report, report
