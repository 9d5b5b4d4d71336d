# The API image: FastAPI + the `srgan` command + boto3 (S3 storage), no ONNX Runtime (the API never runs
# the model).
# Build from the repository root: docker build -f docker/api.Dockerfile -t srgan-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements/api.lock requirements/
RUN pip install --require-hashes -r requirements/api.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY bench ./bench
COPY importers ./importers
COPY cli ./cli
COPY core ./core
COPY model ./model
COPY training ./training
COPY worker ./worker
RUN pip install --no-deps ".[s3]" \
    && useradd --create-home --uid 10001 srgan \
    && mkdir -p /data /models && chown srgan:srgan /data /models

USER srgan
ENV SRGAN_DATA_DIR=/data \
    SRGAN_HOST=0.0.0.0 \
    SRGAN_PORT=8000 \
    SRGAN_HTTP_IDLE_TIMEOUT_S=5 \
    SRGAN_HTTP_HEADER_TIMEOUT_S=10 \
    SRGAN_HTTP_MAX_CONNECTIONS=1000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["srgan", "serve", "--host", "0.0.0.0", "--port", "8000"]
