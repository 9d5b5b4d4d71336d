"""Reading an ONNX file's contract without onnx: ``read_metadata`` walks the protobuf encoding and must agree with
onnx's parser on every file, and leave what is not a model to onnx's error."""

from __future__ import annotations

import onnx
import pytest

from bench.tiny_models import make_nearest_model
from core.catalog.shipped import WEIGHTS_DIR
from model.contract import ModelContract, read_metadata
from model.errors import ModelError

pytestmark = pytest.mark.unit


def _onnx_metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_it_reads_what_onnx_reads(tmp_path):
    files = sorted(WEIGHTS_DIR.glob("*.onnx"))
    assert files, "the shipped models"
    plain = make_nearest_model(tmp_path / "plain.onnx", with_contract=False)
    tagged = make_nearest_model(tmp_path / "tagged.onnx", scale=2, name="tagged")
    proto = onnx.load(str(tagged))
    proto.metadata_props.add(key="ünïcode", value="välue " * 200)  # a multi-byte key, a value over 127 bytes
    proto.metadata_props.add(key="empty", value="")
    onnx.save(proto, str(tmp_path / "more.onnx"))
    for path in [*files, plain, tagged, tmp_path / "more.onnx"]:
        assert read_metadata(path) == _onnx_metadata(path), path
    assert read_metadata(plain) == {} and ModelContract.read(plain) is None
    contract = ModelContract.read(tagged)
    assert contract is not None and contract.scale == 2 and contract.name == "tagged"
    assert read_metadata(tmp_path / "more.onnx")["ünïcode"] == "välue " * 200


@pytest.mark.parametrize("bad", ["truncated", "garbage", "text"])
def test_what_is_not_a_model_is_onnx_s_error(tmp_path, bad):
    data = make_nearest_model(tmp_path / "m.onnx").read_bytes()
    blob = {"truncated": data[: len(data) - 7], "garbage": bytes(range(256)) * 20, "text": b"not a model\n"}[bad]
    path = tmp_path / "bad.onnx"
    path.write_bytes(blob)
    with pytest.raises(ModelError, match="cannot read model file"):
        read_metadata(path)
