#!/usr/bin/env bash
# Build a Debian bookworm base image (CPython 3.11, venv, CA certificates) without a registry:
# mmdebstrap makes the root file system from Debian's packages, `podman import` makes it an image.
# For machines that cannot pull python:3.11-slim; `infra/podman/image.sh` calls it when needed.
#
#   infra/podman/base-image.sh [TAG]        (default: localhost/slimgate-base:bookworm)
#
# Needs mmdebstrap and podman (Debian: apt-get install mmdebstrap podman runc).
set -euo pipefail
tag=${1:-localhost/slimgate-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=infra/podman/env.sh
. "$here/env.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# passwd: useradd for the image's unprivileged user; bookworm's Python is 3.11, as the lock.
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,ca-certificates,passwd \
  bookworm "$work/rootfs.tar" "$mirror"
podman import --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$tag" >/dev/null
echo "built $tag ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
