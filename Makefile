# slimgate: `make demo` and `make test` are the whole quick start.
# Each creates .venv on first use. torch==2.13.0 goes first, in its own pip call: it is the
# CPU wheel; any other torch requirement pulls several GB of CUDA packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test lint fmt bench image kfp clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,airflow,kfp]'
	touch $@

install: $(STAMP)

# Airflow's Kubernetes provider cannot share an environment with kfp: the Kubernetes mode of
# the DAG is tested in its own, where slimgate is installed without its heavy dependencies
# (as on a scheduler whose pods do the work).
K8S       := .venv-k8s
K8S_STAMP := $(K8S)/.installed

$(K8S_STAMP): pyproject.toml
	$(PYTHON) -m venv $(K8S)
	$(K8S)/bin/python -m pip --disable-pip-version-check -q install \
		'apache-airflow>=3.3,<3.4' 'apache-airflow-providers-cncf-kubernetes>=10' pydantic pyyaml rich numpy
	$(K8S)/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/slimgate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint $(K8S_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE     ?= ghcr.io/slimgate/slimgate:$(VERSION)
CONTAINER ?= $(shell command -v podman || command -v docker)

# The image every step runs in (podman here: there is no Docker engine on these machines).
image:
	$(CONTAINER) build -f infra/Dockerfile -t $(IMAGE) .

# Recompile the Kubeflow pipeline IR that infra/ commits (a test fails when it is stale).
kfp: $(STAMP)
	$(BIN)/python dags/slimgate_kfp.py compile infra/kfp/slimgate-pipeline.yaml

clean:
	rm -rf runs registry .pytest_cache .mypy_cache .ruff_cache
