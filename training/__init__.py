"""Training of the SRResNet/SRGAN generator (TensorFlow/Keras), ONNX export and evaluation.

The only package that imports TensorFlow; importing the package itself imports
nothing heavy (the modules that train and export import TensorFlow at their top;
``training.evaluate`` and ``training.figures`` never do). Its command line is
``cli/train.py``. See docs/training.md.
"""
