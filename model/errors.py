"""Typed errors of the deployable model. Each carries a stable ``code`` for APIs and logs."""

from __future__ import annotations


class SRGANError(Exception):
    """Base class. ``code`` is a stable machine-readable name."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(SRGANError):
    """The bytes are not an image we read, or the image is damaged."""

    code = "invalid_image"


class UnsupportedFormat(InvalidImage):
    """Recognisable, but not a format or mode we accept."""

    code = "unsupported_format"


class MultiFrame(SRGANError):
    """An animation or a multi-page file: only single images are upscaled, none is cut to its first frame."""

    code = "multi_frame"


class ImageTooLarge(SRGANError):
    """The image (or its upscaled result) has more pixels than allowed; nothing was decoded."""

    code = "image_too_large"


class InvalidParameter(SRGANError, ValueError):
    """A setting is out of range (tile, overlap, scale, quality, format...)."""

    code = "invalid_parameter"


class ModelError(SRGANError):
    """A model file cannot be loaded or does not behave as its contract says."""

    code = "model_error"


class InferenceError(SRGANError):
    """Running the model failed on a tile; the whole image fails, nothing is skipped."""

    code = "inference_failed"


class OutOfMemory(InferenceError):
    """The runtime could not allocate memory for a batch of tiles (the engine re-splits and retries it)."""

    code = "out_of_memory"


class Canceled(SRGANError):
    """The caller asked to stop (``should_stop()`` returned True) between tiles."""

    code = "canceled"
