"""``srgan upscale`` run as a user runs it: a subprocess on real files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.startup import moment
from bench.tiny_models import make_nearest_model
from model.backends import openvino_capabilities

pytestmark = pytest.mark.integration
SRGAN = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[3]


def srgan(*args, env=None, cwd=None):
    return subprocess.run([*SRGAN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_nearest_model(tmp_path_factory.mktemp("m") / "nearest_x4.onnx", scale=4)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(7)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 25), dtype=np.uint8)).save(folder / "b.jpg", quality=92)
    Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)).save(folder / "c.webp", lossless=True)
    (folder / "broken.png").write_bytes(b"this is text, not a PNG")
    return folder


def test_folder_in_folder_out_with_one_bad_file(model, images, tmp_path):
    out = tmp_path / "out"
    res = srgan("upscale", images, "-o", out, "--model", model, "--tile", "16", "--overlap", "4")
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("srgan: error:")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "not an image" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.jpg", "c_x4.webp"]
    a = Image.open(out / "a_x4.png")
    assert a.size == (47 * 4, 33 * 4) and a.mode == "RGB"
    assert Image.open(out / "b_x4.jpg").mode == "L"
    c = Image.open(out / "c_x4.webp")
    assert c.size == (40, 48) and c.mode == "RGBA"
    src = np.asarray(Image.open(images / "c.webp")).repeat(4, 0).repeat(4, 1)
    # colour went through lossy WebP (quality 95); alpha is stored losslessly
    np.testing.assert_array_equal(np.asarray(c)[:, :, 3], src[:, :, 3])


def test_single_file_to_named_output_in_another_format(model, images, tmp_path):
    dst = tmp_path / "result.webp"
    res = srgan("upscale", images / "a.png", "-o", dst, "--model", model, "--format", "webp", "--quality", "80")
    assert res.returncode == 0, res.stderr
    assert Image.open(dst).format == "WEBP" and Image.open(dst).size == (188, 132)


def test_default_output_lands_beside_the_input(model, images):
    res = srgan("upscale", images / "a.png", env={"SRGAN_MODEL": str(model)})
    assert res.returncode == 0, res.stderr
    assert (images / "a_x4.png").is_file()


def test_alpha_to_jpeg_is_a_clear_error_and_other_files_still_done(model, images, tmp_path):
    res = srgan("upscale", images / "c.webp", images / "a.png", "-o", tmp_path / "o", "--model", model,
                "--format", "jpeg")
    assert res.returncode == 1
    assert "c.webp" in res.stderr and "alpha" in res.stderr
    assert (tmp_path / "o" / "a_x4.jpg").is_file()


def test_scale_option_resamples_the_result(model, images, tmp_path):
    res = srgan("upscale", images / "a.png", "-o", tmp_path / "a2.png", "--model", model, "--scale", "2")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "a2.png").size == (94, 66)


@pytest.mark.parametrize("args,message", [
    (["--tile", "16", "--overlap", "16"], "overlap"),
    (["--quality", "0"], "quality"),
    (["--model", "does-not-exist.onnx"], "not found"),
    (["--model", "no_such_model"], "unknown model"),
])
def test_bad_options_are_one_clear_error(model, images, tmp_path, args, message):
    if "--model" not in args:
        args = [*args, "--model", model]
    res = srgan("upscale", images / "a.png", "-o", tmp_path / "x.png", *args)
    assert res.returncode != 0
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.png").exists()


def test_missing_input_file(model, tmp_path):
    res = srgan("upscale", tmp_path / "nope.png", "--model", model)
    assert res.returncode == 2 and "nope.png" in res.stderr and "Traceback" not in res.stderr  # nothing done
    assert "Errno" not in res.stderr and "check the path" in res.stderr


def test_upscale_never_imports_tensorflow(model, images, tmp_path):
    code = (
        "import sys\nfrom cli.main import main\n"
        f"rc = main(['upscale', {str(images / 'a.png')!r}, '-o', {str(tmp_path / 'y.png')!r}, "
        f"'--model', {str(model)!r}])\n"
        "assert rc == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'celery', 'fastapi') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_warm_start_imports_neither_onnx_nor_onnxruntime(images, tmp_path):
    """Start-up (issue 23): the second run of the shipped default, its compile cache warm, reads the model's
    contract off the file and its compiled network from the cache (no onnx), and learns that the installed ONNX
    Runtime has no GPU provider from its files (no onnxruntime import) before OpenVINO runs it, without OpenVINO's
    model converter (``model.backends.OPENVINO_CONVERTER``, about half of OpenVINO's import)."""
    from model.backends import openvino_available, ort_gpu_build

    assert openvino_available(), "the test environment installs the openvino extra"
    env = {"SRGAN_DATA_DIR": str(tmp_path / "data"), "SRGAN_CACHE_DIR": str(tmp_path / "cache")}
    code = (
        "import sys\nfrom cli.main import main\n"
        f"rc = main(['upscale', {str(images / 'a.png')!r}, '-o', {str(tmp_path / 'y.png')!r}, '--overwrite'])\n"
        "assert rc == 0\n"
        "print([m for m in ('onnx', 'onnxruntime', 'openvino.tools.ovc') if m in sys.modules])\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                           env={**os.environ, **env}) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").iterdir())
    expected = "['onnxruntime']" if ort_gpu_build() else "[]"  # a GPU build is imported: it may run the job
    assert runs[1].stdout.strip().splitlines()[-1] == expected


def test_precision_flag_runs_bf16_and_rescues_a_ruined_tile_in_float32(tmp_path):
    """``--precision bf16`` reaches OpenVINO; a model bfloat16 blanks still gives the float32 result."""
    from bench.tiny_models import make_low_precision_fragile_model

    fragile = make_low_precision_fragile_model(tmp_path / "fragile.onnx", "blank")
    src = tmp_path / "in.png"
    pixels = np.random.default_rng(3).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(src)
    dst = tmp_path / "out.png"
    res = srgan("-v", "upscale", src, "-o", dst, "--model", fragile, "--backend", "openvino",
                "--precision", "bf16", "--tile", "16", "--overlap", "4")
    assert res.returncode == 0, res.stderr
    if "BF16" in openvino_capabilities():  # AVX512 or AMX: bfloat16 ruins the tiles, float32 runs them again
        assert "re-run in f32" in res.stderr
    else:  # an AVX2-only CPU: OpenVINO has no bfloat16; it says so and runs float32 (nothing to re-run)
        assert "asked OpenVINO on CPU for bf16; it runs f32" in res.stderr and "re-run" not in res.stderr
    assert np.abs(np.asarray(Image.open(dst)).astype(int) - pixels).max() <= 1


def test_unknown_precision_is_refused(model, images, tmp_path):
    res = srgan("upscale", images / "a.png", "-o", tmp_path / "x.png", "--model", model, "--precision", "int4")
    assert res.returncode == 2 and "invalid choice: 'int4'" in res.stderr


@pytest.mark.parametrize("src,dst,fmt", [("b.jpg", "out.png", "PNG"), ("a.png", "x.webp", "WEBP"),
                                         ("a.png", "x.JPEG", "JPEG")])
def test_the_output_extension_decides_the_format(model, images, tmp_path, src, dst, fmt):
    """``-o out.png`` from a JPEG wrote JPEG bytes into out.png (and ``-o x.webp`` wrote PNG)."""
    res = srgan("upscale", images / src, "-o", tmp_path / dst, "--model", model)
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / dst).format == fmt


@pytest.mark.parametrize("dst,args,message", [
    ("x.png", ["--format", "jpeg"], "conflicts"),
    ("x.tiff", [], "cannot tell the output format"),
])
def test_a_format_the_output_name_contradicts_is_an_error(model, images, tmp_path, dst, args, message):
    res = srgan("upscale", images / "a.png", "-o", tmp_path / dst, "--model", model, *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / dst).exists()


def test_format_flag_names_the_format_of_an_output_without_a_known_extension(model, images, tmp_path):
    res = srgan("upscale", images / "a.png", "-o", tmp_path / "x.img", "--model", model, "--format", "webp")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "x.img").format == "WEBP"


def test_an_output_in_a_folder_that_does_not_exist_is_written(model, images, tmp_path):
    """``-o newdir/x.png`` failed with ``No such file or directory: 'newdir/.x.png.tmp'``."""
    dst = tmp_path / "newdir" / "deeper" / "x.png"
    res = srgan("upscale", images / "a.png", "-o", dst, "--model", model)
    assert res.returncode == 0, res.stderr
    assert Image.open(dst).size == (188, 132)
    assert [p.name for p in dst.parent.iterdir()] == ["x.png"], "no temporary file is left"


def test_an_output_that_cannot_be_written_is_one_clear_error(model, images, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    res = srgan("upscale", images / "a.png", "-o", tmp_path / "file" / "x.png", "--model", model)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert ".tmp" not in res.stderr and "file" in res.stderr


def test_recursive_mirrors_the_tree_and_plain_folders_stay_flat(model, images, tmp_path):
    """A folder input silently skipped its subfolders; ``--recursive`` takes them, mirrored under ``-o``."""
    nested = images / "trip" / "day1"
    nested.mkdir(parents=True)
    Image.open(images / "a.png").save(nested / "d.png")
    flat = srgan("upscale", images, "-o", tmp_path / "flat", "--model", model)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a_x4.png", "b_x4.jpg", "c_x4.webp"]
    assert "no input" not in flat.stderr
    res = srgan("upscale", images, "-o", tmp_path / "tree", "--model", model, "--recursive")
    assert res.returncode == 1  # broken.png
    assert Image.open(tmp_path / "tree" / "trip" / "day1" / "d_x4.png").size == (188, 132)
    assert "4 done, 0 skipped, 1 failed" in res.stdout


def test_existing_outputs_are_skipped_unless_overwrite_and_the_batch_reports_counts(model, images, tmp_path):
    out = tmp_path / "out"
    first = srgan("upscale", images, "-o", out, "--model", model)
    assert first.returncode == 1 and "3 done, 0 skipped, 1 failed" in first.stdout
    (out / "a_x4.png").write_bytes(b"kept")
    again = srgan("upscale", images, "-o", out, "--model", model)
    assert again.returncode == 1 and "0 done, 3 skipped, 1 failed" in again.stdout
    assert "--overwrite" in again.stdout
    assert (out / "a_x4.png").read_bytes() == b"kept"
    forced = srgan("upscale", images, "-o", out, "--model", model, "--overwrite")
    assert "3 done, 0 skipped, 1 failed" in forced.stdout
    assert Image.open(out / "a_x4.png").size == (188, 132)


def test_a_rerun_beside_the_inputs_does_not_upscale_the_results_again(model, images):
    first = srgan("upscale", images, "--model", model)
    assert "3 done, 0 skipped, 1 failed" in first.stdout
    again = srgan("upscale", images, "--model", model)
    assert "0 done, 3 skipped, 1 failed" in again.stdout
    assert not list(images.glob("*_x4_x4.*"))


def test_the_output_pixel_limit_applies_as_in_the_service(model, images, tmp_path):
    """The CLI skipped ``check_output_pixels``: ``--scale 8`` had no output limit while the service refused."""
    dst = tmp_path / "big.png"
    res = srgan("upscale", images / "a.png", "-o", dst, "--model", model, "--scale", "8",
                env={"SRGAN_MAX_OUTPUT_PIXELS": str(47 * 33 * 16)})
    assert res.returncode == 1 and "the limit is" in res.stderr and "Traceback" not in res.stderr
    assert not dst.exists()


@pytest.mark.parametrize("out", ["in", "in/up", "."])
def test_an_output_folder_inside_beside_or_above_the_inputs(model, images, tmp_path, out):
    """Results written into (a folder of) the input tree are not taken as inputs by a re-run."""
    target = tmp_path / out
    first = srgan("upscale", images, "-o", target, "--model", model, "--recursive")
    assert "3 done, 0 skipped, 1 failed" in first.stdout, first.stdout + first.stderr
    again = srgan("upscale", images, "-o", target, "--model", model, "--recursive")
    assert "0 done, 3 skipped, 1 failed" in again.stdout, again.stdout + again.stderr


def test_a_16_bit_png_comes_back_16_bit_and_jpeg_says_it_holds_8(model, tmp_path):
    import imagecodecs

    x = np.linspace(0, 65535, 24 * 40).reshape(24, 40)
    src = np.stack([x, x[::-1], 65535 - x], -1).astype(np.uint16)
    (tmp_path / "scan.png").write_bytes(bytes(imagecodecs.png_encode(src)))
    res = srgan("upscale", tmp_path / "scan.png", "-o", tmp_path / "big.png", "--model", model)
    assert res.returncode == 0, res.stderr
    assert "16 bits per channel" in res.stdout
    out = imagecodecs.png_decode((tmp_path / "big.png").read_bytes())
    assert out.dtype == np.uint16 and min(len(np.unique(out[..., c])) for c in range(3)) > 256
    np.testing.assert_array_equal(out[::4, ::4], src)
    res = srgan("upscale", tmp_path / "scan.png", "-o", tmp_path / "big.jpg", "--model", model)
    assert res.returncode == 0, res.stderr
    assert "srgan: warning:" in res.stderr and "8 bits per channel" in res.stderr


def test_timings_give_the_moments_of_each_file_from_the_process_start_in_order(model, images, tmp_path):
    out = tmp_path / "out"
    res = srgan("upscale", images / "a.png", images / "b.jpg", "-o", out, "--model", model, "--tile", "16",
                "--overlap", "4", "--timings")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("srgan: timings:")]
    assert [line.split(": ")[2] for line in lines] == [str(images / "a.png"), str(images / "b.jpg")]
    first = dict(part.rsplit(" ", 2)[:2] for part in lines[0].split("from process start: ")[1].split(", "))
    names = list(first)
    assert names == ["command running", "engine ready", "first tile", "all tiles", "written"]
    moments = [float(first[name]) for name in names]
    assert moments == sorted(moments) and moments[0] > 0.05  # the interpreter and the imports come first
    # srgan bench startup reads the same line
    assert (moment(lines[0], "engine ready"), moment(lines[0], "first tile")) == (moments[1], moments[2])
    # the second file reuses the engine: only its tiles and its file
    assert "engine ready" not in lines[1] and "first tile" in lines[1] and "written" in lines[1]
