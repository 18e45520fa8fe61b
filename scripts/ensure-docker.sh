#!/usr/bin/env bash
# Makes a Docker daemon answer for the container tests: installs Debian's docker.io (and
# debootstrap, which builds the offline base image) when missing, starts dockerd when none runs.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
log=/var/log/steadyframe-dockerd.log
echo "starting dockerd (log: $log)"
$sudo sh -c "nohup dockerd >$log 2>&1 &"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not answer within 60 s; its log:" >&2
tail -n 40 "$log" >&2
exit 1
