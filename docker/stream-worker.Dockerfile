# syntax=docker/dockerfile:1
# The VSSStream worker image: `vss stream` (PyAV's bundled FFmpeg, trackers, the v2 gRPC client) and no
# predictor runtime of its own: the streams extra of pyproject.toml, plus trackers without its declared
# dependencies ([tool.vss.no-deps]: it asks for opencv-python, whose cv2 would overwrite the headless one).
# Build from the repository root: docker build -f docker/stream-worker.Dockerfile .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
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
    && /opt/vss/bin/pip install --no-cache-dir ".[streams]" \
    && /opt/vss/bin/pip install --no-cache-dir --no-deps "trackers==2.6.1"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/vss/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/vss /opt/vss
# Matches the runAsUser stream_render sets; the root filesystem is read-only in the pod (/tmp is an emptyDir).
USER 1000:1000
EXPOSE 8090
ENTRYPOINT ["vss"]
CMD ["stream", "--help"]
