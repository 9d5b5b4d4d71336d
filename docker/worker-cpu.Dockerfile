# The CPU worker image (the default worker of docker-compose.yml): ONNX Runtime and OpenVINO on the CPU,
# boto3 for S3 storage, `srgan worker`. Runs on any machine; no NVIDIA toolkit needed.
# Build from the repository root: docker build -f docker/worker-cpu.Dockerfile -t srgan-worker-cpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements/worker-cpu.lock requirements/
RUN pip install --require-hashes -r requirements/worker-cpu.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY bench ./bench
COPY importers ./importers
COPY cli ./cli
COPY core ./core
COPY model ./model
COPY training ./training
COPY worker ./worker
RUN pip install --no-deps ".[cpu,openvino,s3]" \
    && useradd --create-home --uid 10001 srgan \
    && mkdir -p /data /models && chown srgan:srgan /data /models

USER srgan
ENV SRGAN_DATA_DIR=/data
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A worker.celery_app inspect ping --timeout 10 --destination worker@$HOSTNAME"]
CMD ["srgan", "worker", "--name", "worker@%h"]
