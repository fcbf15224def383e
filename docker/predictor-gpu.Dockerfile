# syntax=docker/dockerfile:1
# The data-plane image for NVIDIA GPUs: CUDA 12 and cuDNN 9 runtime libraries under onnxruntime-gpu's CUDA
# (and, when the libraries are present, TensorRT) execution providers, and PyPI's CUDA build of torch for
# `format: torchscript`: the serving and torch extras of pyproject.toml. The transformer container runs the
# CPU image; this one serves the predictor when `predictor.device: gpu`.
# Build from the repository root: docker build -f docker/predictor-gpu.Dockerfile .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# Ubuntu's python3.12 is pinned by the CUDA base image's tag; apt version pins would only rot.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY cli/ cli/
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/vss_models/ models/vss_models/
COPY streams/ streams/
RUN python3.12 -m venv /opt/vss && /opt/vss/bin/pip install --no-cache-dir ".[serving,torch]"

FROM ${CUDA_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/vss/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build /opt/vss /opt/vss
USER 1000:1000
EXPOSE 8085 8086
CMD ["python", "-m", "vss_predictors", "--help"]
