#!/usr/bin/env bash
# Builds a Debian bookworm base image without any image registry: debootstrap from Debian's
# package mirror, then `docker import`. Skipped when the image exists already.
# Usage: scripts/build-base-image.sh [TAG]   (default steadyframe-base:bookworm)
set -euo pipefail
tag="${1:-steadyframe-base:bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists; reusing it"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
root="$(mktemp -d /tmp/steadyframe-base.XXXXXX)"
trap '$sudo rm -rf "$root"' EXIT
# What the Dockerfile would otherwise fetch with apt-get: Python with venv, tini, CA certificates.
$sudo debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
  bookworm "$root" http://deb.debian.org/debian
$sudo chroot "$root" apt-get clean
$sudo rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
$sudo tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag"
echo "built base image $tag"
