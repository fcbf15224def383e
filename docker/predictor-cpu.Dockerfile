# syntax=docker/dockerfile:1
# The data-plane image for CPUs: `python -m vss_predictors` (kserve-container) and
# `python -m vss_transformers` (transformer-container) from the same install: the serving and torch extras
# of pyproject.toml, so `format: torchscript` predictors start too.
# onnxruntime-gpu (in serving) falls back to its CPU provider, so one dependency set serves both containers.
# Build from the repository root: docker build -f docker/predictor-cpu.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# PyTorch's CPU-only wheel (torch==X+cpu) satisfies the `torch==X` pin and sorts above PyPI's CUDA build
# of X, so pip picks it. PyPI's build installs 1.2 GB of torch plus 3.0 GB of nvidia-* and 1.0 GB of triton
# wheels that a CPU pod never loads. Point TORCH_INDEX at a mirror of that index where the build cannot
# reach it (https://pypi.org/simple takes PyPI's CUDA build, and those 4 GB more).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY cli/ cli/
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/vss_models/ models/vss_models/
COPY streams/ streams/
RUN python -m venv /opt/vss \
    && /opt/vss/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" ".[serving,torch]"

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
