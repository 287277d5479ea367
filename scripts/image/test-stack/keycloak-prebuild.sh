#!/bin/bash
# Starts Keycloak in development mode once while the image is built, so that a container's `start-dev` finds
# the Quarkus build done (about 30 s of every start). Keycloak re-builds only when the build options differ,
# so the arguments are those tests/support/containers.py starts it with. The database is then dropped: each
# container makes its own, with its own bootstrap admin. The build runs without a network, so nothing clashes
# with the host's ports.
set -euo pipefail
cd /opt/keycloak
log=/tmp/keycloak-prebuild.log
bin/kc.sh start-dev "$@" > "$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "Listening on" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 1
done
grep -q "Listening on" "$log" || { cat "$log"; exit 1; }
kill "$pid"
wait "$pid" || true
grep -q "Updating the configuration" "$log"
rm -rf data/h2 data/transaction-logs "$log"
