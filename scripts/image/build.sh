#!/usr/bin/env bash
# Builds the reconciler's image with podman (or docker when there is no podman):
#
#   scripts/image/build.sh [TAG]                      # FROM the official python:3.11-slim-bookworm
#   LOCAL_BASE=1 scripts/image/build.sh [TAG]         # FROM a local Debian base (scripts/image/make_base.sh)
#
# TAG defaults to keycloak-user-reconciler:dev. The build's pip uses the host's package index setting when
# it has one (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST or their `pip config` values), and the
# host network, so it reaches the index exactly as the host's pip does.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-keycloak-user-reconciler:dev}
BASE=${BASE_IMAGE:-localhost/reconciler-base:bookworm-py3.11}

if command -v podman >/dev/null; then engine=(scripts/image/podman.sh); else engine=(docker); fi
args=(build --network host --tag "$TAG" --file Dockerfile)
if [ "${LOCAL_BASE:-0}" = 1 ]; then
  scripts/image/make_base.sh "$BASE"
  args+=(--build-arg "PYTHON_IMAGE=$BASE")
fi

pip_setting() {  # $1: environment variable, $2: pip config key
  local value=${!1:-}
  if [ -z "$value" ] && command -v pip3 >/dev/null; then value=$(pip3 config get "$2" 2>/dev/null || true); fi
  if [ -n "$value" ]; then args+=(--build-arg "$1=$value"); fi
}
pip_setting PIP_INDEX_URL global.index-url
pip_setting PIP_EXTRA_INDEX_URL global.extra-index-url
pip_setting PIP_TRUSTED_HOST global.trusted-host

"${engine[@]}" "${args[@]}" .
