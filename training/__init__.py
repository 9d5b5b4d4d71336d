"""Training of the SRResNet/SRGAN generator (TensorFlow/Keras), ONNX export and evaluation.

The only package that imports TensorFlow; importing it (or ``training.cli``)
imports nothing heavy. See docs/training.md.
"""
