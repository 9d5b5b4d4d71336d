"""The typed configuration of a training run.

One :class:`TrainConfig` holds everything a run needs. It comes from the
stage's defaults (:func:`default_config`), then an optional JSON file
(``--config``), then command-line flags; it is printed at the start and saved
as ``config.json`` in the run directory, where ``--resume`` reads it back.
No TensorFlow here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stage = Literal["pretrain", "gan"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GeneratorConfig(_Section):
    """The generator's shape (see ``training.arch.build_generator``).

    ``arch`` is ``srresnet`` (the default, and what a ``config.json`` saved before the field existed means),
    ``compact`` (Real-ESRGAN's SRVGGNetCompact, the fast tier: ``blocks`` counts its body convolutions) or ``span``
    (SPAN, a fast-tier candidate: ``blocks`` counts its attention blocks); ``bn_momentum`` and
    ``zero_init_residual`` apply to ``srresnet`` alone.
    """

    arch: Literal["srresnet", "compact", "span"] = Field(
        "srresnet", description="srresnet (residual blocks with batch norm), compact (Real-ESRGAN's "
        "SRVGGNetCompact: conv + PReLU layers at input resolution, a quarter of the FLOPs at 64 filters, 16 convs) "
        "or span (SPAN: 3-conv blocks with parameter-free sigmoid attention; 0.19x at 48 filters, 6 blocks)")
    scale: Literal[2, 4, 8] = Field(4, description="upscaling factor")
    filters: int = Field(64, ge=1, description="trunk channels")
    blocks: int = Field(16, ge=0, description="residual blocks (srresnet); body convolutions (compact); attention "
                        "blocks (span)")
    bn_momentum: float = Field(0.8, gt=0, lt=1, description="batch-norm momentum (srresnet)")
    zero_init_residual: bool = Field(
        True, description="start each residual block's last batch-norm gamma at 0 (blocks begin as identity; "
        "srresnet)"
    )
    global_skip: Literal["none", "bicubic", "bicubic_edge"] = Field(
        "bicubic", description="add a bicubic upscale of the input to the output (training starts at bicubic "
        "quality); bicubic_edge: edge pixels replicated instead of weights renormalised at the border (the same "
        "inside, cheaper to run: the fast tier's)"
    )


class DataConfig(_Section):
    """Where the images come from and how crops are made."""

    data: Path | None = Field(None, description="training images: a DIV2K folder or any folder of HR images")
    extra_data: list[Path] = Field(
        [], description="more plain folders of HR images trained on with --data (e.g. ../shared/data/train-extra); "
        "the images of all folders are split and sampled as one set"
    )
    format: Literal["auto", "folder", "div2k"] = Field("auto", description="how to read --data")
    div2k_track: Literal["bicubic", "unknown", "mild", "difficult", "wild"] = Field(
        "bicubic", description="DIV2K degradation track (LR read from disk)"
    )
    hr_size: int = Field(96, ge=8, description="side of the square HR training crops")
    batch_size: int = Field(16, ge=1, description="crops per step")
    flip: bool = Field(True, description="random horizontal flip")
    rotate: bool = Field(True, description="random 90-degree rotation")
    degradation: Literal["bicubic", "realworld"] = Field(
        "bicubic", description="how LR crops are made: bicubic (the protocol, clean models) or realworld (the "
        "high-order blur/resize/noise/JPEG model of training.degradations, on the HR crop, on the fly)")
    jpeg_noise: bool = Field(False, description="JPEG-compress the LR crop (off: evaluation uses clean bicubic LR)")
    jpeg_quality: tuple[int, int] = Field((50, 95), description="JPEG quality range, low and high")
    jpeg_prob: float = Field(0.5, ge=0, le=1, description="probability of JPEG noise on a crop")
    cache: Literal["auto", "memory", "disk"] = Field(
        "auto",
        description="memory: decode every image once and keep it; disk: decode per crop; auto: memory when it fits",
    )
    cache_max_gb: float = Field(6.0, gt=0, description="largest decoded data set 'auto' keeps in memory")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of the folder held out for validation")
    val_images: int = Field(16, ge=0, description="most validation images used")
    val_max_side: int = Field(512, ge=16, description="validation HR images are centre-cropped to this side")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        lo, hi = self.jpeg_quality
        if not 0 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality must be 0 <= low <= high <= 100, got {self.jpeg_quality}")
        return self


Range = tuple[float, float]


class DegradeConfig(_Section):
    """The real-world degradation model (``training.degradations``), used when ``data.degradation`` is realworld.

    Two passes of blur, resize and noise (in a random order: ``shuffle_order``), each ending in JPEG, then a resize
    to the LR size and a sinc filter and JPEG in either order. Defaults: Real-ESRGAN's train_realesrnet_x4plus.yml
    (sigmas and noise in 0..255 levels; resize factors of the image (first pass) or of the LR size (second)).
    """

    shuffle_order: bool = Field(True, description="shuffle blur, resize and noise within each pass (BSRGAN)")
    blur_sigma: Range = Field((0.2, 3.0), description="first blur: Gaussian sigma range (pixels)")
    betag: Range = Field((0.5, 4.0), description="generalized-Gaussian shape range")
    betap: Range = Field((1.0, 2.0), description="plateau shape range")
    sinc_prob: float = Field(0.1, ge=0, le=1, description="first blur: probability of a sinc kernel")
    resize_up_prob: float = Field(0.2, ge=0, le=1, description="first resize: probability of upscaling")
    resize_down_prob: float = Field(0.7, ge=0, le=1, description="first resize: probability of downscaling")
    resize_range: Range = Field((0.15, 1.5), description="first resize: factor range")
    gaussian_noise_prob: float = Field(0.5, ge=0, le=1, description="first noise: Gaussian (else Poisson)")
    noise_sigma: Range = Field((1.0, 30.0), description="first noise: Gaussian sigma range (levels)")
    poisson_scale: Range = Field((0.05, 3.0), description="first noise: Poisson scale range")
    gray_noise_prob: float = Field(0.4, ge=0, le=1, description="first noise: probability of gray (luma) noise")
    jpeg_range: tuple[int, int] = Field((30, 95), description="first JPEG: quality range")
    second_blur_prob: float = Field(0.8, ge=0, le=1, description="second blur: probability")
    blur_sigma2: Range = Field((0.2, 1.5), description="second blur: Gaussian sigma range")
    sinc_prob2: float = Field(0.1, ge=0, le=1, description="second blur: probability of a sinc kernel")
    resize_up_prob2: float = Field(0.3, ge=0, le=1, description="second resize: probability of upscaling")
    resize_down_prob2: float = Field(0.4, ge=0, le=1, description="second resize: probability of downscaling")
    resize_range2: Range = Field((0.3, 1.2), description="second resize: factor range (of the LR size)")
    gaussian_noise_prob2: float = Field(0.5, ge=0, le=1, description="second noise: Gaussian (else Poisson)")
    noise_sigma2: Range = Field((1.0, 25.0), description="second noise: Gaussian sigma range")
    poisson_scale2: Range = Field((0.05, 2.5), description="second noise: Poisson scale range")
    gray_noise_prob2: float = Field(0.4, ge=0, le=1, description="second noise: probability of gray noise")
    jpeg_range2: tuple[int, int] = Field((30, 95), description="second and final JPEG: quality range")
    final_sinc_prob: float = Field(0.8, ge=0, le=1, description="final sinc filter: probability")
    light_prob: float = Field(
        0.0, ge=0, le=1,
        description="probability that a crop takes the light model instead of the two passes: an optional mild "
        "blur, one resize to the LR size, optional noise, optional JPEG (most uploads: a resized photo saved as "
        "JPEG, not blurred twice). Without it the model sharpens every input as if it were blurred")
    light_blur_prob: float = Field(0.3, ge=0, le=1, description="light model: probability of a Gaussian blur")
    light_blur_sigma: Range = Field((0.2, 1.2), description="light model: blur sigma range (HR pixels)")
    light_noise_prob: float = Field(0.5, ge=0, le=1, description="light model: probability of Gaussian noise")
    light_noise_sigma: Range = Field((1.0, 10.0), description="light model: noise sigma range (levels)")
    light_jpeg_prob: float = Field(0.9, ge=0, le=1, description="light model: probability of JPEG (jpeg_range2)")

    @model_validator(mode="after")
    def _check(self) -> DegradeConfig:
        for name in ("blur_sigma", "betag", "betap", "resize_range", "noise_sigma", "poisson_scale", "jpeg_range",
                     "blur_sigma2", "resize_range2", "noise_sigma2", "poisson_scale2", "jpeg_range2",
                     "light_blur_sigma", "light_noise_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be 0 < low <= high, got {(lo, hi)}")
        for name in ("jpeg_range", "jpeg_range2"):
            if getattr(self, name)[1] > 100:
                raise ValueError(f"{name}: JPEG quality is at most 100")
        if self.resize_up_prob + self.resize_down_prob > 1 or self.resize_up_prob2 + self.resize_down_prob2 > 1:
            raise ValueError("resize up and down probabilities add up to more than 1")
        return self


class OptimConfig(_Section):
    """Optimiser, learning-rate schedule and pixel loss."""

    loss: Literal["mse", "l1"] = Field("l1", description="pixel loss of pretraining")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    schedule: Literal["constant", "piecewise", "cosine"] = Field("cosine", description="learning-rate schedule")
    boundaries: list[int] = Field([100_000], description="piecewise: steps where the rate is multiplied by decay")
    decay: float = Field(0.1, gt=0, description="piecewise: factor at each boundary")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up from lr/100 (cosine only)")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine: final rate as a share of lr")
    beta_1: float = Field(0.9, gt=0, lt=1)
    beta_2: float = Field(0.999, gt=0, lt=1)
    clipnorm: float | None = Field(None, gt=0, description="clip each gradient to this norm")
    pooled_weight: float = Field(
        0.0, ge=0,
        description="pretraining: weight of an L1 between both images average-pooled by the scale, added to the "
                    "pixel loss. A per-pixel L1 makes each pixel its conditional median, which in textured regions "
                    "of heavily degraded inputs is darker than their mean (measured: up to -10 levels of blue); "
                    "the pooled term keeps local colour means",
    )
    distill_from: Path | None = Field(
        None,
        description="pretraining: a teacher generator (run directory, checkpoint or .weights.h5; a shipped "
        "model's .resume.weights.h5 takes its architecture from the card beside it) whose output on each LR crop "
        "is a second target: loss = pixel(sr, hr) + distill_weight * pixel(sr, teacher(lr)). For a small network "
        "on a small data set (the compact tier on 333 images): the teacher's output is a smoother target than HR",
    )
    distill_weight: float = Field(1.0, ge=0, description="weight of the distillation term (with --distill-from)")


RANDOM_VGG19_LAYERS = ["block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4"]


class GanConfig(_Section):
    """The adversarial stage."""

    pretrained: Path | None = Field(
        None, description="generator to start from: a run directory, checkpoint or .weights.h5 (required for gan)"
    )
    perceptual: Literal["auto", "vgg54", "random-vgg19", "none"] = Field(
        "auto",
        description="content loss: vgg54 (VGG19 ImageNet features, the paper's), random-vgg19 (the generic "
        "perceptual loss: untrained seeded VGG19, several layers; no download), none; auto: vgg54 when the "
        "ImageNet weights are found, else random-vgg19 (resolved once, at the start of the run)",
    )
    perceptual_weight: float = Field(1.0, ge=0, description="weight of the content (perceptual) loss")
    perceptual_seed: int = Field(0, description="random-vgg19: seed of its weights")
    perceptual_layers: list[str] = Field(
        RANDOM_VGG19_LAYERS, description="random-vgg19: layers compared (pre-activation outputs)"
    )
    perceptual_redraw: bool = Field(
        False,
        description="random-vgg19: draw new random weights at every step (the loss becomes an expectation over "
        "random networks, so the generator cannot fit one network's blind spots: the stripes a fixed one leaves)",
    )
    pixel_weight: float = Field(0.0, ge=0, description="weight of a pixel loss term (ESRGAN uses 1e-2 with L1)")
    lowfreq_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an L1 term between the output and the HR image, both average-pooled by the scale "
        "factor: holds colour and the low frequencies (what the LR input fixes) and leaves texture free",
    )
    pixel_loss: Literal["l1", "mse"] = Field("l1", description="the pixel loss term's kind")
    vgg_weights: Path | None = Field(None, description="VGG19 ImageNet weights (notop .h5); default: the Keras cache")
    vgg_layer: str = Field("block5_conv4", description="VGG19 layer of the content loss")
    vgg_rescale: float = Field(12.75, gt=0, description="VGG features are divided by this (VGG54 loss)")
    adv_weight: float = Field(1e-3, ge=0, description="weight of the adversarial loss")
    discriminator: Literal["srgan", "unet"] = Field(
        "srgan", description="srgan: the paper's (one judgement per crop); unet: Real-ESRGAN's U-Net with spectral "
        "normalisation (a judgement per pixel; the reference for real-world texture models)")
    d_filters: int = Field(64, ge=1, description="discriminator channels of the first block")
    d_lr: float | None = Field(None, gt=0, description="discriminator peak learning rate (default: lr)")
    max_psnr_drop: float = Field(
        0.5,
        ge=0,
        description="checkpoint picking: the best weights are those of lowest validation NIQE among validations "
        "whose PSNR-Y is at most this far below bicubic's",
    )
    max_flat_ratio: float | None = Field(
        None,
        gt=0,
        description="checkpoint picking: also leave out validations whose flat-region error (noise, blocks and "
        "invented texture where the ground truth is flat) is above this multiple of bicubic's; Real-ESRGAN x4plus "
        "measured 1.12 on the realworld validation split (bench/README.md)",
    )

    @model_validator(mode="after")
    def _check(self) -> GanConfig:
        if self.perceptual == "none" and self.pixel_weight == 0 and self.adv_weight == 0 and self.lowfreq_weight == 0:
            raise ValueError("the gan stage needs a loss: perceptual, pixel_weight, lowfreq_weight or adv_weight")
        if self.perceptual_redraw and self.perceptual not in ("random-vgg19", "auto"):
            raise ValueError("perceptual_redraw applies to the random-vgg19 loss only")
        return self


class TrainConfig(_Section):
    """A whole run. ``stage`` picks the loop; ``gan`` is used by the gan stage only."""

    stage: Stage = "pretrain"
    run_dir: Path = Field(Path("runs/srresnet_x4"), description="checkpoints, logs, samples, config.json")
    steps: int = Field(50_000, ge=1, description="total training steps (the schedule ends here)")
    seed: int = Field(0, description="seed of weights and crops")
    xla: bool = Field(
        False,
        description="compile the train step with XLA (slower than oneDNN on the CPUs measured: bench/train_speed.py)",
    )
    deterministic: bool = Field(False, description="TensorFlow op determinism (slower)")
    precision: Literal["auto", "float32", "mixed_bfloat16"] = Field(
        "auto",
        description="mixed_bfloat16: bfloat16 compute, float32 weights; auto: that on a CPU with bfloat16 "
        "instructions (AVX512-BF16, AMX) and no GPU, else float32",
    )
    threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0 = all cores")
    log_every: int = Field(50, ge=1, description="steps between progress lines and TensorBoard scalars")
    val_every: int = Field(500, ge=1, description="steps between validations (and best-weight saves)")
    ckpt_every: int = Field(500, ge=1, description="steps between checkpoints")
    keep: int = Field(3, ge=1, description="checkpoints kept")
    init_weights: Path | None = Field(
        None,
        description="generator .weights.h5 a run with no checkpoint starts from (e.g. the shipped "
        "model/weights/srresnet_x4.resume.weights.h5, to continue the default model on a new machine)",
    )
    init_step: int = Field(
        0, ge=0, description="training step init_weights were saved at: the schedule and crops go on from it")
    init_scale: int | None = Field(
        None, description="the scale of the network init_weights hold, when it is not generator.scale: its "
        "layers are copied by name where their shapes match (an x4 model's head, trunk, first upsampler and tail "
        "seeding an x2 one); the others start fresh")
    samples: int = Field(4, ge=0, description="validation images saved as samples at each validation")
    generator: GeneratorConfig = GeneratorConfig()
    data: DataConfig = DataConfig()
    degrade: DegradeConfig = DegradeConfig()
    optim: OptimConfig = OptimConfig()
    gan: GanConfig = GanConfig()

    @model_validator(mode="after")
    def _check_distill(self) -> TrainConfig:
        if self.optim.distill_from is not None and self.stage != "pretrain":
            raise ValueError("--distill-from is a pretraining option (the gan stage has its own losses)")
        return self

    @model_validator(mode="after")
    def _check_warmup(self) -> TrainConfig:
        """A warm-up must fit in the steps this run trains (``build_schedule`` would cut it short)."""
        uses_warmup = self.optim.schedule == "cosine" or (self.stage == "pretrain" and self.init_step > 0)
        run_steps = self.steps - self.init_step
        if uses_warmup and self.optim.warmup_steps > run_steps:
            trained = f"--steps {self.steps}" + (f" minus --init-step {self.init_step}" if self.init_step else "")
            raise ValueError(f"the warm-up (--warmup-steps {self.optim.warmup_steps}) is longer than the "
                             f"{run_steps} steps this run trains ({trained}); lower --warmup-steps "
                             "(0: no warm-up) or raise --steps")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.model_validate_json(Path(path).read_text())


def default_config(stage: Stage) -> TrainConfig:
    """The defaults of a stage.

    ``pretrain`` is tuned to converge fast on a CPU (docs/training.md): L1
    loss, Adam 2e-4 with warm-up and cosine decay, zero-initialised residual
    blocks, a bicubic global skip, no XLA (slower than oneDNN here), mixed
    bfloat16 where the CPU has instructions for it. ``gan``
    follows the paper's tutorial: 1e-4, then 1e-5 after 100000 steps.
    """
    if stage == "pretrain":
        return TrainConfig(stage="pretrain")
    return TrainConfig(
        stage="gan",
        run_dir=Path("runs/srgan_x4"),
        steps=200_000,
        optim=OptimConfig(loss="mse", lr=1e-4, schedule="piecewise", boundaries=[100_000], decay=0.1),
    )


def merge(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``config`` with dotted-path ``overrides`` (``{"optim.lr": 1e-4}``) applied and validated."""
    body = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        node = body
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"unknown setting {dotted!r}")
        node[leaf] = value.as_posix() if isinstance(value, Path) else value
    return TrainConfig.model_validate(body)


def load_overrides_file(path: Path) -> dict[str, Any]:
    """A JSON config file as dotted overrides (nested sections or dotted keys)."""
    raw = json.loads(Path(path).read_text())
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and key in _SECTIONS:
                walk(f"{dotted}.", value)
            else:
                flat[dotted] = value

    walk("", raw)
    return flat


_SECTIONS = {"generator", "data", "degrade", "optim", "gan"}
