#!/bin/sh
# The image's entrypoint (under tini): reads the API token from a secret file when one is named,
# warns loudly when the server will listen beyond loopback without a token, then runs the command.
set -eu
if [ -n "${STEADYFRAME_API_TOKEN_FILE:-}" ]; then
  if [ ! -r "$STEADYFRAME_API_TOKEN_FILE" ]; then
    echo "steadyframe: STEADYFRAME_API_TOKEN_FILE=$STEADYFRAME_API_TOKEN_FILE is not readable" >&2
    exit 64
  fi
  STEADYFRAME_API_TOKEN="$(tr -d '\r\n' <"$STEADYFRAME_API_TOKEN_FILE")"
  export STEADYFRAME_API_TOKEN
fi
if [ -z "${STEADYFRAME_API_TOKEN:-}" ]; then
  case "${STEADYFRAME_ALLOW_UNAUTHENTICATED_REMOTE:-}" in
    1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn])
      echo "steadyframe: WARNING: no API token and STEADYFRAME_ALLOW_UNAUTHENTICATED_REMOTE is set:" \
        "anyone who can reach port ${STEADYFRAME_PORT:-7860} can run jobs and read every output." >&2 ;;
  esac
fi
exec "$@"
