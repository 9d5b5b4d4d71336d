"""The generators (SRResNet, Ledig et al. 2017; Real-ESRGAN's compact SRVGGNet; SPAN, Wan et al. 2024) and the
discriminators as Keras builders.

A generator takes and gives float32 NHWC images in 0..255 (the ONNX contract
of ``model/contract.py``): normalisation to [0, 1] and denormalisation from
[-1, 1] are layers inside the graph. ``build_generator(arch=...)`` builds
any generator from a ``GeneratorConfig``'s fields.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import keras
import numpy as np
from keras import layers

SCALES = (2, 4, 8)
Arch = Literal["srresnet", "compact", "span"]
ARCHS: tuple[str, ...] = ("srresnet", "compact", "span")


class DepthToSpace(layers.Layer):
    """Sub-pixel shuffle: (N, H, W, C * b * b) -> (N, H * b, W * b, C)."""

    def __init__(self, block_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return keras.ops.depth_to_space(x, self.block_size, data_format="channels_last")

    def get_config(self) -> dict:
        return {**super().get_config(), "block_size": self.block_size}


def _keys_cubic(t: float, a: float = -0.5) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def bicubic_kernel(factor: int) -> np.ndarray:
    """(5, 5, 3, 3 * factor**2) kernel: a conv with it, then depth-to-space, is bicubic upscaling.

    Half-pixel centres and Keys a = -0.5: output pixel ``factor * i + p``
    samples input position ``i + (p + 0.5) / factor - 0.5``.
    """
    taps = np.zeros((factor, 5))
    for p in range(factor):
        d = (p + 0.5) / factor - 0.5
        for k in range(5):  # input offsets -2..2
            taps[p, k] = _keys_cubic(k - 2 - d)
    kernel = np.zeros((5, 5, 3, 3 * factor * factor), np.float32)
    for py in range(factor):
        for px in range(factor):
            for c in range(3):
                kernel[:, :, c, (py * factor + px) * 3 + c] = np.outer(taps[py], taps[px])
    return kernel


class BicubicUpscale(layers.Layer):
    """Bicubic upscaling by an integer factor as a fixed convolution (exports to ONNX, compiles with XLA).

    ``edges="renormalise"`` matches ``tf.image.resize(x, size, "bicubic")`` (and Pillow's filter before its
    uint8 rounding): taps outside the image are dropped and the remaining weights renormalised, which takes a
    second convolution (of ones: the in-image weights) and a division. ``edges="replicate"`` repeats the edge
    pixels outward instead (numpy's ``edge`` padding) and needs neither: the same values from two input pixels
    in, and in the engine 0.1-0.2 s per output megapixel less (bench/README.md, "The fast tier").
    """

    def __init__(self, factor: int, edges: str = "renormalise", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if edges not in ("renormalise", "replicate"):
            raise ValueError(f"edges must be 'renormalise' or 'replicate', got {edges!r}")
        self.factor = factor
        self.edges = edges
        self._kernel = bicubic_kernel(factor)

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        ops = keras.ops
        kernel = ops.convert_to_tensor(self._kernel, dtype=x.dtype)
        if self.edges == "replicate":
            half = self._kernel.shape[0] // 2
            for axis in (1, 2):  # slices and concatenations: any size, down to one pixel
                first = ops.take(x, [0] * half, axis=axis)
                last = ops.take(x, [-1] * half, axis=axis)
                x = ops.concatenate([first, x, last], axis=axis)
            return ops.depth_to_space(ops.conv(x, kernel, padding="valid"), self.factor, data_format="channels_last")
        weighted = ops.conv(x, kernel, padding="same")
        coverage = ops.conv(ops.ones_like(x), kernel, padding="same")  # sum of the in-image weights
        return ops.depth_to_space(weighted / coverage, self.factor, data_format="channels_last")

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor, "edges": self.edges}


class Clip(layers.Layer):
    """Clamp values to [low, high]."""

    def __init__(self, low: float, high: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return keras.ops.clip(x, self.low, self.high)

    def get_config(self) -> dict:
        return {**super().get_config(), "low": self.low, "high": self.high}


def _prelu(name: str) -> layers.Layer:
    # One slope per channel, shared over height and width, as in the paper.
    return layers.PReLU(shared_axes=[1, 2], name=name)


def _residual_block(
    x: keras.KerasTensor, filters: int, momentum: float, zero_init: bool, name: str,
) -> keras.KerasTensor:
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(y)
    y = _prelu(f"{name}_prelu")(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    gamma = "zeros" if zero_init else "ones"
    y = layers.BatchNormalization(momentum=momentum, gamma_initializer=gamma, name=f"{name}_bn2")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def build_generator(
    scale: int = 4,
    filters: int = 64,
    blocks: int = 16,
    bn_momentum: float = 0.8,
    zero_init_residual: bool = False,
    global_skip: str = "none",
    arch: Arch = "srresnet",
) -> keras.Model:
    """SRResNet, or with ``arch="compact"`` the compact network of :func:`build_compact`, with ``arch="span"`` the
    network of :func:`build_span`.

    Takes a ``GeneratorConfig``'s fields (``build_generator(**config.generator.model_dump())``: every stage,
    export and release build their generator so).

    Args:
        scale: upscaling factor, 2, 4 or 8 (one sub-pixel block per factor of two).
        filters: channels of the trunk (64 in the paper).
        blocks: residual blocks (16 in the paper); for ``compact``, its body convolutions; for ``span``, its
            attention blocks.
        bn_momentum: batch-norm momentum (0.8 in the paper's TensorFlow tutorial); not used by ``compact`` or
            ``span``.
        zero_init_residual: start each residual block's last batch-norm gamma at
            zero, so every block begins as the identity (trains faster; the
            paper's network is ``False``); not used by ``compact`` or ``span`` (no batch norm).
        global_skip: ``none``, ``bicubic`` (the output is a bicubic upscale of the input plus what the network
            adds; its last convolution starts at zero, so training starts at bicubic quality) or ``bicubic_edge``
            (the same with the edge pixels replicated instead of the weights renormalised: cheaper to run).
        arch: ``srresnet``, ``compact`` or ``span``.

    Returns:
        A model mapping (N, H, W, 3) float32 0..255 to (N, H*scale, W*scale, 3)
        float32 0..255, with ``H`` and ``W`` free.
    """
    if arch == "compact":
        return build_compact(scale, filters, blocks, global_skip)
    if arch == "span":
        return build_span(scale, filters, blocks, global_skip)
    if arch != "srresnet":
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    lr = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(lr)
    x = layers.Conv2D(filters, 9, padding="same", name="head_conv")(x)
    head = x = _prelu("head_prelu")(x)
    for i in range(blocks):
        x = _residual_block(x, filters, bn_momentum, zero_init_residual, name=f"res{i}")
    x = layers.Conv2D(filters, 3, padding="same", name="trunk_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="trunk_bn")(x)
    x = layers.Add(name="trunk_add")([head, x])
    for i in range(int(math.log2(scale))):
        x = layers.Conv2D(filters * 4, 3, padding="same", name=f"up{i}_conv")(x)
        x = DepthToSpace(2, name=f"up{i}_shuffle")(x)
        x = _prelu(f"up{i}_prelu")(x)
    _check_skip(global_skip)
    init = "glorot_uniform" if global_skip == "none" else "zeros"
    x = layers.Conv2D(3, 9, padding="same", activation="tanh", kernel_initializer=init, name="tail_conv")(x)
    return keras.Model(lr, _output(lr, x, scale, global_skip), name=f"srresnet_x{scale}")


GLOBAL_SKIPS = ("none", "bicubic", "bicubic_edge")


def _check_skip(global_skip: str) -> None:
    if global_skip not in GLOBAL_SKIPS:
        raise ValueError(f"global_skip must be one of {GLOBAL_SKIPS}, got {global_skip!r}")


def _output(lr: keras.KerasTensor, x: keras.KerasTensor, scale: int, global_skip: str) -> keras.KerasTensor:
    """The image from the network's last (tanh, [-1, 1]) tensor at output resolution: rescaled to 0..255
    (``none``), or rescaled to +-127.5, added to a bicubic upscale of ``lr`` and clipped (``bicubic``: edges
    renormalised; ``bicubic_edge``: edge pixels replicated, see :class:`BicubicUpscale`)."""
    if global_skip == "none":
        return layers.Rescaling(127.5, offset=127.5, dtype="float32", name="denormalize")(x)
    residual = layers.Rescaling(127.5, dtype="float32", name="denormalize")(x)
    edges = "replicate" if global_skip == "bicubic_edge" else "renormalise"
    base = BicubicUpscale(scale, edges=edges, dtype="float32", name="bicubic")(lr)
    hr = layers.Add(dtype="float32", name="skip_add")([base, residual])
    return Clip(0.0, 255.0, dtype="float32", name="clip")(hr)


def build_compact(scale: int = 4, filters: int = 64, convs: int = 16, global_skip: str = "bicubic") -> keras.Model:
    """Real-ESRGAN's ``SRVGGNetCompact`` (Wang et al. 2021, the ``realesr-general``/``animevideov3`` network): the
    fast tier.

    A 3x3 convolution from RGB to ``filters`` channels, ``convs`` times a 3x3 convolution ``filters`` to
    ``filters``, each followed by a PReLU (one slope per channel, as SRResNet's), then one 3x3 convolution to
    ``3 * scale**2`` channels and a pixel shuffle: everything runs at input resolution, no batch norm, no
    residual blocks. About ``2 * 9 * filters * (3 + convs * filters + 3 * scale**2)`` FLOPs per input pixel
    (1.24 M at 64 filters, 16 convolutions, x4; SRResNet's 4.45 M). Real-ESRGAN adds a nearest-neighbour
    upscale of the input; here the global skip is SRResNet's: ``bicubic`` adds a bicubic upscale and starts the
    last convolution at zero (the untrained network is bicubic), ``bicubic_edge`` the same with the edge pixels
    replicated (no renormalisation: the fast tier's choice, its skip costs about as much as the rest of the
    network otherwise at bfloat16), ``none`` has no skip.

    Returns:
        A model mapping (N, H, W, 3) float32 0..255 to (N, H*scale, W*scale, 3) float32 0..255.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    _check_skip(global_skip)
    lr = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(lr)
    # He initialisation: the PReLUs start at slope 0 (ReLUs), which halve the variance of what passes; with
    # Keras's default (Glorot, variance 1 / fan_in here) 17 layers leave the tail's input at about 1e-3 of the
    # head's, so the zero-initialised tail gets almost no gradient and the network stays its bicubic skip
    # (measured: validation PSNR-Y equal to bicubic's after 1,500 steps)
    x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name="head_conv")(x)
    x = _prelu("head_prelu")(x)
    for i in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"body{i}_conv")(x)
        x = _prelu(f"body{i}_prelu")(x)
    return keras.Model(lr, _tail(x, lr, scale, global_skip), name=f"compact_x{scale}")


def _tail(x: keras.KerasTensor, lr: keras.KerasTensor, scale: int, global_skip: str) -> keras.KerasTensor:
    """A 3x3 convolution to ``3 * scale**2`` channels, tanh and one pixel shuffle, then :func:`_output` (with a
    skip, the convolution starts at zero: the untrained network is its skip)."""
    init = "glorot_uniform" if global_skip == "none" else "zeros"
    x = layers.Conv2D(3 * scale * scale, 3, padding="same", activation="tanh", kernel_initializer=init,
                      name="tail_conv")(x)
    x = DepthToSpace(scale, name="tail_shuffle")(x)
    return _output(lr, x, scale, global_skip)


def build_span(scale: int = 4, filters: int = 48, blocks: int = 6, global_skip: str = "bicubic_edge") -> keras.Model:
    """SPAN (Wan et al. 2024, "Swift Parameter-free Attention Network for Efficient Super-Resolution", the
    NTIRE 2024 efficient-SR winner; spandrel's ``SPAN``), a fast-tier candidate.

    A 3x3 convolution from RGB to ``filters`` channels, then ``blocks`` attention blocks, each three 3x3
    convolutions (SiLU after the first two) whose output ``y`` gates itself and the block's input:
    ``(y + x) * (sigmoid(y) - 0.5)`` (the attention has no parameters: no pooling, no softmax, nothing OpenVINO
    runs slowly); a 3x3 convolution after the last block; a 1x1 convolution over the head's features, that
    convolution's output, the first block's output and the last block's first convolution (SPAN's ``conv_cat``);
    then the tail (a 3x3 convolution to ``3 * scale**2`` channels and a pixel shuffle) and the global skip, as
    :func:`build_compact`. About ``2 * (9 * filters * (3 * blocks + 1 + 3 * scale**2) + 4 * filters**2)`` FLOPs
    per input pixel (0.85 M at 48 filters, 6 blocks, x4). SPAN trains each 3x3 convolution as a re-parameterised
    sum of 1x1 and 3x3 branches merged after training (``Conv3XC``); here they are plain 3x3 convolutions (the
    same network at inference).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    if blocks < 1:
        raise ValueError(f"span needs at least one block, got {blocks}")
    _check_skip(global_skip)

    def conv(y: keras.KerasTensor, name: str, size: int = 3) -> keras.KerasTensor:
        return layers.Conv2D(filters, size, padding="same", kernel_initializer="he_normal", name=name)(y)

    lr = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(lr)
    head = x = conv(x, "head_conv")
    first_out = last_c1 = None
    for i in range(blocks):
        c1 = conv(x, f"block{i}_conv1")
        y = conv(layers.Activation("silu", name=f"block{i}_silu1")(c1), f"block{i}_conv2")
        y = conv(layers.Activation("silu", name=f"block{i}_silu2")(y), f"block{i}_conv3")
        gate = layers.Activation("sigmoid", name=f"block{i}_sigmoid")(y)
        gate = layers.Rescaling(1.0, offset=-0.5, name=f"block{i}_gate")(gate)
        x = layers.Multiply(name=f"block{i}_attend")([layers.Add(name=f"block{i}_add")([y, x]), gate])
        first_out = x if first_out is None else first_out
        last_c1 = c1
    x = conv(x, "body_conv")
    x = layers.Concatenate(name="cat")([head, x, first_out, last_c1])
    x = conv(x, "cat_conv", size=1)
    return keras.Model(lr, _tail(x, lr, scale, global_skip), name=f"span_x{scale}")


def copy_matching_layers(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of ``source``'s layers into ``target``'s layers of the same name and shapes (an x4
    SRResNet seeding an x2 one: all but the second upsampler); the names of ``target``'s weighted layers left as
    they were."""
    fresh = []
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            weights = source.get_layer(layer.name).get_weights()
        except ValueError:
            fresh.append(layer.name)
            continue
        if [w.shape for w in weights] != [tuple(v.shape) for v in layer.weights]:
            fresh.append(layer.name)
            continue
        layer.set_weights(weights)
    return fresh


def build_discriminator(hr_size: int = 96, filters: int = 64, bn_momentum: float = 0.8) -> keras.Model:
    """SRGAN discriminator.

    Args:
        hr_size: side of the square HR crops it judges (the dense head fixes it).
        filters: channels of the first block; doubled every two blocks (64..512).
        bn_momentum: batch-norm momentum of every block but the first.

    Returns:
        A model mapping (N, hr_size, hr_size, 3) float32 0..255 to (N, 1)
        probabilities that the input is a real image.
    """
    image = keras.Input(shape=(hr_size, hr_size, 3), name="hr")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(image)
    plan = [(filters, 1), (filters, 2), (filters * 2, 1), (filters * 2, 2)]
    plan += [(filters * 4, 1), (filters * 4, 2), (filters * 8, 1), (filters * 8, 2)]
    for i, (n, stride) in enumerate(plan):
        x = layers.Conv2D(n, 3, strides=stride, padding="same", name=f"d{i}_conv")(x)
        if i > 0:
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"d{i}_bn")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"d{i}_lrelu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, name="fc")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="fc_lrelu")(x)
    prob = layers.Dense(1, activation="sigmoid", dtype="float32", name="prob")(x)
    return keras.Model(image, prob, name="discriminator")


def build_unet_discriminator(filters: int = 64) -> keras.Model:
    """Real-ESRGAN's U-Net discriminator with spectral normalisation (``UNetDiscriminatorSN``, Wang et al. 2021).

    Three stride-2 convolutions down, three bilinear x2 upsamplings with skip additions back up, then two
    3x3 convolutions and a one-channel head: a real/fake judgement for every pixel, so the generator is told
    where its texture is wrong, not only whether the whole crop is. Every convolution but the first and the
    last is spectrally normalised (``keras.layers.SpectralNormalization``): the discriminator stays
    1-Lipschitz-ish and the stage is stable without batch norm.

    Returns:
        A model mapping (N, H, W, 3) float32 0..255 (H, W multiples of 8) to (N, H, W, 1) probabilities.
    """
    def conv(x: keras.KerasTensor, n: int, k: int, stride: int, name: str, sn: bool = True,
             bias: bool = True) -> keras.KerasTensor:
        layer = layers.Conv2D(n, k, strides=stride, padding="same", use_bias=bias, name=name)
        return (layers.SpectralNormalization(layer, name=f"{name}_sn") if sn else layer)(x)

    def lrelu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return layers.LeakyReLU(negative_slope=0.2, name=name)(x)

    def up(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return layers.UpSampling2D(2, interpolation="bilinear", name=name)(x)

    image = keras.Input(shape=(None, None, 3), name="hr")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(image)
    x0 = lrelu(conv(x, filters, 3, 1, "u0_conv", sn=False), "u0_lrelu")
    x1 = lrelu(conv(x0, filters * 2, 4, 2, "u1_conv", bias=False), "u1_lrelu")
    x2 = lrelu(conv(x1, filters * 4, 4, 2, "u2_conv", bias=False), "u2_lrelu")
    x3 = lrelu(conv(x2, filters * 8, 4, 2, "u3_conv", bias=False), "u3_lrelu")
    x4 = lrelu(conv(up(x3, "u4_up"), filters * 4, 3, 1, "u4_conv", bias=False), "u4_lrelu")
    x4 = layers.Add(name="u4_skip")([x4, x2])
    x5 = lrelu(conv(up(x4, "u5_up"), filters * 2, 3, 1, "u5_conv", bias=False), "u5_lrelu")
    x5 = layers.Add(name="u5_skip")([x5, x1])
    x6 = lrelu(conv(up(x5, "u6_up"), filters, 3, 1, "u6_conv", bias=False), "u6_lrelu")
    x6 = layers.Add(name="u6_skip")([x6, x0])
    y = lrelu(conv(x6, filters, 3, 1, "u7_conv", bias=False), "u7_lrelu")
    y = lrelu(conv(y, filters, 3, 1, "u8_conv", bias=False), "u8_lrelu")
    logits = conv(y, 1, 3, 1, "u9_conv", sn=False)
    prob = layers.Activation("sigmoid", dtype="float32", name="prob")(logits)
    return keras.Model(image, prob, name="unet_discriminator")
