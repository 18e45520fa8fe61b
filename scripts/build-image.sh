#!/usr/bin/env bash
# Builds the steadyframe image (`make image` calls this with its variables).
#   IMAGE BASE_IMAGE TORCH_SPEC   the tag, the base and the torch build the workers get
#   WHEELHOUSE                    when set: a folder of every wheel the image needs; the build's pip
#                                 installs from it alone (no package index), served on loopback
#   PYTHON                        the Python that serves WHEELHOUSE
#   WHEELHOUSE_PORT               the loopback port tried first for it (default 47860)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IMAGE:?}" "${BASE_IMAGE:?}" "${TORCH_SPEC:?}"
offline_args=()
if [ -n "${WHEELHOUSE:-}" ]; then
  port_file="$(mktemp -u /tmp/steadyframe-wheelhouse.XXXXXX)"
  "${PYTHON:-python3}" scripts/serve_wheelhouse.py "$WHEELHOUSE" "$port_file" "${WHEELHOUSE_PORT:-47860}" &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null || true; rm -f "$port_file"' EXIT
  for _ in $(seq 1 100); do
    [ -s "$port_file" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "the wheelhouse server exited" >&2; exit 1; }
    sleep 0.1
  done
  find_links="http://127.0.0.1:$(cat "$port_file")/"
  echo "build installs wheels from $WHEELHOUSE only (served at $find_links)"
  offline_args=(--build-arg PIP_FIND_LINKS="$find_links" --build-arg PIP_NO_INDEX=1)
fi
# Host networking: the build's pip reaches the loopback wheelhouse (or the package index).
DOCKER_BUILDKIT=0 nice docker build --network host -t "$IMAGE" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg TORCH_SPEC="$TORCH_SPEC" "${offline_args[@]}" .
