# syntax=docker/dockerfile:1
# The data-plane image for CPUs: `python -m vss_predictors` (kserve-container) and
# `python -m vss_transformers` (transformer-container) from the same install.
# onnxruntime-gpu (a dependency) falls back to its CPU provider, so one dependency set serves both images.
# Build from the repository root: docker build -f docker/predictor-cpu.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/ models/
RUN python -m venv /opt/vss && /opt/vss/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/vss/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/vss /opt/vss
# Matches the runAsUser render sets; the root filesystem is read-only in the pod (/tmp is an emptyDir).
USER 1000:1000
EXPOSE 8080 8081 8085 8086
CMD ["python", "-m", "vss_predictors", "--help"]
