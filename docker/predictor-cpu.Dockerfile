# syntax=docker/dockerfile:1
# The data-plane image for CPUs: `python -m vss_predictors` (kserve-container) and
# `python -m vss_transformers` (transformer-container) from the same install: the serving and torch extras
# of pyproject.toml, so `format: torchscript` predictors start too.
# onnxruntime-gpu (in serving) falls back to its CPU provider, so one dependency set serves both containers.
# Build from the repository root: docker build -f docker/predictor-cpu.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# PyTorch's CPU-only wheels (torch==X+cpu, about 0.2 GB) satisfy the `torch==X` pin and sort above PyPI's
# CUDA build (X, which pulls some 3 GB of nvidia-* wheels this image never loads), so pip picks them.
# Point it at a mirror of that index if the build cannot reach it; an empty value gets PyPI's CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY cli/ cli/
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/vss_models/ models/vss_models/
RUN python -m venv /opt/vss \
    && /opt/vss/bin/pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} ".[serving,torch]"

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
