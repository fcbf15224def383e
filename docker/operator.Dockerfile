# syntax=docker/dockerfile:1
# The operator image: `vss operator` (kopf) and nothing of the data plane, so it stays small.
# Build from the repository root: docker build -f docker/operator.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/ models/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The operator's own dependencies only (the distribution also carries the data plane's).
RUN pip install "kopf==1.45.2" "kubernetes>=31" "pydantic>=2.10,<3" "pyyaml>=6" "prometheus-client>=0.21"
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["vss"]
CMD ["operator"]
