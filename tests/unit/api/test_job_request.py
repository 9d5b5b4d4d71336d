"""Form parameters of POST /v1/jobs and how jobs are shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import JobOut, JobRequest, download_name
from core.job_record import Job

pytestmark = pytest.mark.unit


def test_defaults_and_aliases():
    assert JobRequest.model_validate({}).model_dump() == {"scale": None, "width": None, "height": None,
                                                          "max_side": None, "model": None, "format": None,
                                                          "quality": 95, "detail": None, "denoise": None}
    assert JobRequest.model_validate({"detail": "0.25"}).detail == 0.25
    assert JobRequest.model_validate({"detail": ""}).detail is None
    parsed = JobRequest.model_validate({"scale": "2", "format": "JPG", "quality": "80", "model": "srresnet_x4:3"})
    assert (parsed.scale, parsed.format, parsed.quality, parsed.model) == (2, "jpeg", 80, "srresnet_x4:3")
    assert JobRequest.model_validate({"scale": " ", "format": ""}).scale is None
    assert JobRequest.model_validate({"scale": "2.5"}).scale == 2.5
    sized = JobRequest.model_validate({"width": "1920", "height": "1080", "max_side": ""})
    assert (sized.width, sized.height, sized.max_side) == (1920, 1080, None)


@pytest.mark.parametrize("fields", [{"scale": "0"}, {"scale": "9"}, {"scale": "0.99"}, {"scale": "8.5"},
                                    {"scale": "x"}, {"scale": "nan"}, {"scale": "inf"}, {"width": "0"},
                                    {"height": "-1"}, {"max_side": "1.5"}, {"width": "wide"},
                                    {"format": "gif"}, {"quality": "0"}, {"quality": "101"},
                                    {"detail": "-0.1"}, {"detail": "1.5"}, {"detail": "nan"},
                                    {"denoise": "-0.1"}, {"denoise": "1.01"}, {"denoise": "nan"},
                                    {"denoise": "strong"}, {"denoise": "inf"},
                                    {"model": "../../etc/passwd.onnx"}, {"model": "/abs/path.onnx"}, {"other": "1"}])
def test_bad_parameters(fields):
    with pytest.raises(ValidationError):
        JobRequest.model_validate(fields)


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), (" AUTO ", "auto"), ("0", 0.0), ("0.62", 0.62),
                                               ("1", 1.0), ("", None)])
def test_denoise_is_auto_or_a_strength(value, parsed):
    assert JobRequest.model_validate({"denoise": value}).denoise == parsed


def test_a_bad_denoise_names_the_field():
    with pytest.raises(ValidationError) as info:
        JobRequest.model_validate({"denoise": "strong"})
    assert {err["loc"][0] for err in info.value.errors()} == {"denoise"}


def test_job_view_and_download_name():
    job = Job(id="3f1b7e1c-0000-4000-8000-000000000000", status="succeeded", progress=1.0, created_at=1.7e9,
              input={"filename": "holiday.photo.jpg", "width": 10, "height": 8, "format": "jpeg", "mode": "RGB"},
              params={"scale": 4}, output={"width": 40, "height": 32, "ext": "jpg", "media_type": "image/jpeg"})
    view = JobOut.from_job(job)
    assert view.output is not None
    assert view.output.filename == download_name(job) == "holiday.photo_x4.jpg"
    assert view.links.result.endswith("/result") and view.created_at.tzinfo is not None
    running = Job(id=job.id, status="running", output={"width": 1, "height": 1})
    assert JobOut.from_job(running).output is None, "no output is shown before success"
