#!/usr/bin/env bash
# Build the project image with podman (`make image`), on any machine: one that can pull
# python:3.11-slim and reach the PyTorch CPU index, or one that reaches only PyPI and Debian.
#
#   IMAGE=TAG [BASE=IMAGE] [TORCH_WHEELS=DIR] infra/podman/image.sh
#
# BASE defaults to python:3.11-slim; where it cannot be pulled, a Debian bookworm base is built
# here with mmdebstrap (base-image.sh). TORCH_WHEELS defaults to the folder of pip's find-links
# that holds torch-2.13.0+cpu, if any; otherwise the wheel comes from the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=infra/podman/env.sh
. infra/podman/env.sh
image=${IMAGE:?set IMAGE to the tag to build}
wheel=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl

base=${BASE:-}
if [ -z "$base" ]; then
  if podman image exists docker.io/library/python:3.11-slim \
     || timeout 60 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    base=docker.io/library/python:3.11-slim
  else
    base=localhost/slimgate-base:bookworm
    echo "python:3.11-slim cannot be pulled here: building on $base"
    podman image exists "$base" || infra/podman/base-image.sh "$base"
  fi
fi

args=(--build-arg "BASE=$base")
wheels=${TORCH_WHEELS:-}
if [ -z "$wheels" ]; then
  for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
    if [ -f "$dir/$wheel" ]; then wheels=$dir; break; fi
  done
fi
if [ -n "$wheels" ]; then
  wheels=$(cd "$wheels" && pwd)  # a relative path would name a podman volume
  args+=(--build-arg "TORCH_WHEELS=$wheels" -v "$wheels:$wheels:ro")
fi
# pip in the build trusts what pip on this host trusts (a proxy's CA, say)
ca=${CA_BUNDLE:-${PIP_CERT:-}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
  args+=(--build-arg "CA_BUNDLE=/run/build-ca.crt" -v "$ca:/run/build-ca.crt:ro")
fi
echo "building $image on $base, torch from ${wheels:-the PyTorch CPU index}"
podman build -f infra/Dockerfile "${args[@]}" -t "$image" .
