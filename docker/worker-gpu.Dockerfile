# The GPU worker image: CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu, boto3 (S3 storage), `srgan worker`.
# Build from the repository root: docker build -f docker/worker-gpu.Dockerfile -t srgan-worker-gpu .
# Without a GPU, use the CPU worker image (worker-cpu.Dockerfile, the default in docker-compose.yml).
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
COPY importers ./importers
COPY cli ./cli
COPY core ./core
COPY model ./model
COPY training ./training
COPY worker ./worker
RUN pip install --no-deps ".[gpu,s3]" \
    && useradd --create-home --uid 10001 srgan \
    && mkdir -p /data /models && chown srgan:srgan /data /models

USER srgan
ENV SRGAN_DATA_DIR=/data \
    SRGAN_BACKEND=onnxruntime \
    SRGAN_PROVIDERS='["CUDAExecutionProvider", "CPUExecutionProvider"]'
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A worker.celery_app inspect ping --timeout 10 --destination worker@$HOSTNAME"]
CMD ["srgan", "worker", "--name", "worker@%h"]
