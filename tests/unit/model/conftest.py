from __future__ import annotations

import numpy as np
import pytest

from bench.tiny_models import make_conv_model, make_nearest_model


@pytest.fixture(scope="session")
def nearest_path(tmp_path_factory):
    return make_nearest_model(tmp_path_factory.mktemp("models") / "nearest_x4.onnx", scale=4)


@pytest.fixture(scope="session")
def conv_path(tmp_path_factory):
    return make_conv_model(tmp_path_factory.mktemp("models") / "conv_x4.onnx", scale=4)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
