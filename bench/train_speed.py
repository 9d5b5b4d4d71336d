"""Training speed of the full SRResNet (16 blocks, 64 filters, x4) on this machine.

Compares, in one process, a plain ``tf.function`` train step as in the SRGAN
tutorial (float32, MSE, no XLA) with the same step compiled with XLA and with
the path ``srgan train pretrain`` takes by default (``--precision auto``:
mixed bfloat16 on a CPU with bfloat16 instructions, no XLA), on batches of 16
random 96x96 HR crops, and prints steps per second for each and the ratio to
the plain loop.

    srgan bench train-speed --steps 6 --warmup 2
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np
import tensorflow as tf

from training.config import default_config, merge
from training.pretrain import PretrainStage
from training.trainer import resolve_precision

VARIANTS = {
    # name: (description, jit_compile, precision, config overrides)
    "plain": ("tutorial: tf.function, float32, MSE, no XLA", False, "float32", {"optim.loss": "mse"}),
    "xla": ("--precision float32 --xla: the step compiled with XLA", True, "float32", {}),
    "default": ("srgan train pretrain defaults", False, "auto", {}),
    "bf16_xla": ("--precision mixed_bfloat16 --xla", True, "mixed_bfloat16", {}),
}


def measure(name: str, steps: int, warmup: int, batch: int, hr_size: int, blocks: int, filters: int) -> float:
    description, jit, precision, overrides = VARIANTS[name]
    precision = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(precision)
    config = merge(
        default_config("pretrain"),
        {"generator.blocks": blocks, "generator.filters": filters, "data.batch_size": batch, **overrides},
    )
    keras.utils.set_random_seed(0)
    stage = PretrainStage(config)
    step = tf.function(stage.train_step, jit_compile=jit)
    rng = np.random.default_rng(0)
    lr_size = hr_size // 4
    lr = tf.constant(rng.uniform(0, 255, (batch, lr_size, lr_size, 3)).astype("float32"))
    hr = tf.constant(rng.uniform(0, 255, (batch, hr_size, hr_size, 3)).astype("float32"))
    t0 = time.perf_counter()
    for _ in range(warmup):
        float(step(lr, hr)["loss"])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        float(step(lr, hr)["loss"])
    rate = steps / (time.perf_counter() - t0)
    print(
        f"{name:9s} {rate:6.3f} steps/s  {1 / rate:6.2f} s/step  (warm-up {compile_s:.1f} s)  "
        f"{description} [{precision}]",
        flush=True,
    )
    keras.mixed_precision.set_global_policy("float32")
    return rate


def run(args: argparse.Namespace) -> int:
    """``srgan bench train-speed`` (arguments: ``cli/bench.py``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported (in measure)

    names = args.variants.split(",")
    print(
        f"SRResNet {args.blocks} blocks x {args.filters} filters, "
        f"batch {args.batch} of {args.hr_size}x{args.hr_size} HR, "
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs"
    )
    rates = {n: measure(n, args.steps, args.warmup, args.batch, args.hr_size, args.blocks, args.filters) for n in names}
    if "plain" in rates:
        for name, rate in rates.items():
            if name != "plain":
                print(f"{name} / plain: {rate / rates['plain']:.2f}x")
    return 0

