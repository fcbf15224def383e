# syntax=docker/dockerfile:1
# The operator image: `vss operator` (kopf) and nothing of the data plane, so it stays small.
# Build from the repository root: docker build -f docker/operator.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# setuptools builds the distribution from all seven packages, so all of them are copied; what gets installed
# with them is the operator extra of pyproject.toml only (kopf, kubernetes, aiohttp; no kserve, no numpy).
COPY pyproject.toml README.md ./
COPY api/ api/
COPY cli/ cli/
COPY operator/ operator/
COPY predictors/ predictors/
COPY transformers/ transformers/
COPY models/vss_models/ models/vss_models/
COPY streams/ streams/
RUN python -m venv /opt/vss && /opt/vss/bin/pip install --no-cache-dir ".[operator]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/vss/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/vss /opt/vss
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["vss"]
CMD ["operator"]
