# The trainer image: TensorFlow (GPU build; it runs on the CPU without one), the training package, the
# `srgan` command. It trains, exports and deploys into the shared models volume:
#   docker compose --profile trainer run --rm trainer train pretrain --data /datasets/train --run-dir /runs/x4
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t srgan-trainer .
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY bench ./bench
COPY importers ./importers
COPY cli ./cli
COPY core ./core
COPY model ./model
COPY training ./training
COPY worker ./worker
# TensorFlow (and TensorBoard) come with the base image; the rest of the train extra, and ONNX Runtime
# on the CPU for the export's parity check and the deploy check.
RUN pip install ".[cpu]" "tf2onnx>=1.16,<2" "matplotlib>=3.8,<4" \
    && useradd --create-home --uid 10001 srgan \
    && mkdir -p /data /models /runs && chown srgan:srgan /data /models /runs

USER srgan
ENV SRGAN_DATA_DIR=/data \
    SRGAN_MODELS_DIR=/models
ENTRYPOINT ["srgan"]
CMD ["models"]
