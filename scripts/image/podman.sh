#!/usr/bin/env bash
# podman with this project's containers.conf (runc, cgroupfs, file events, lowered ulimits), unless the
# caller set CONTAINERS_CONF already.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}
exec podman "$@"
