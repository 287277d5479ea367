#!/bin/bash
# Starts the broker the way the official apache/kafka image does: each KAFKA_* variable is a server
# property (KAFKA_FOO_BAR -> foo.bar; "__" -> "_", "___" -> "-"), CLUSTER_ID names the cluster, the storage
# is formatted on the first start. KAFKA_HEAP_OPTS and KAFKA_OPTS go to the JVM.
set -euo pipefail
config=/opt/kafka/config/server.properties
: > "$config"
for name in $(compgen -e | grep '^KAFKA_' || true); do
  case $name in KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_LOG4J_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_VERSION) continue ;; esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!name}" >> "$config"
done
grep -q '^log\.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >> "$config"

java=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} ${KAFKA_OPTS:-}
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp "/opt/kafka/libs/*")
# A static voter list is formatted as it is; without one the single node bootstraps its own quorum.
standalone=(--standalone)
grep -q '^controller\.quorum\.voters=' "$config" && standalone=()
"${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" \
  -c "$config" "${standalone[@]}"
exec "${java[@]}" kafka.Kafka "$config"
