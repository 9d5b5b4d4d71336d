# The GPU worker image: CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu, `srgan worker`.
# Build from the repository root: docker build -f docker/worker-gpu.Dockerfile -t srgan-worker-gpu .
# Without a GPU, ONNX Runtime falls back to its CPU provider (slowly); see docs/service.md.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY requirements/worker-gpu.lock requirements/
RUN pip install --require-hashes -r requirements/worker-gpu.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY bench ./bench
COPY cli ./cli
COPY core ./core
COPY model ./model
COPY training ./training
COPY worker ./worker
RUN pip install --no-deps ".[gpu]" \
    && useradd --create-home --uid 10001 srgan \
    && mkdir -p /data /models && chown srgan:srgan /data /models

USER srgan
ENV SRGAN_DATA_DIR=/data \
    SRGAN_BACKEND=onnxruntime \
    SRGAN_PROVIDERS='["CUDAExecutionProvider", "CPUExecutionProvider"]'
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A worker.celery_app inspect ping --timeout 10 --destination worker@$HOSTNAME"]
CMD ["srgan", "worker", "--name", "worker@%h"]
