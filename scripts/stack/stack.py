#!/usr/bin/env python3
"""The local stack without Docker: Kafka (KRaft), Keycloak with the Kafka listener on PostgreSQL, SecantusDB.

Usage: stack.py up | down | status | start SERVICE | stop SERVICE
       (SERVICE: secantusdb, postgres, kafka, keycloak; on a cluster shape also kafka-N, keycloak-N and
       keycloak-front, and `kafka` / `keycloak` then mean all brokers / nodes; `status` lists the shape's)

STACK_KEYCLOAK_DB=postgres (default) runs Keycloak on a PostgreSQL 16 from the pinned PyPI wheel `pgserver`;
STACK_KEYCLOAK_DB=h2 on Keycloak's embedded H2 file database (no PostgreSQL: the fastest loop).
STACK_KEYCLOAK_NODES=2: two Keycloak nodes in one cluster behind a round-robin front (front.py) on the Keycloak
port; STACK_KAFKA_BROKERS=3: three KRaft brokers, the topics replicated three times (min.insync.replicas 2).

STACK_SECURE=1: connections as production has them. A test CA (made once with openssl, in the state folder's
`tls/`) signs one server certificate for 127.0.0.1; Kafka's client listener is SASL_SSL with SCRAM-SHA-512 users
(random passwords: the broker itself, `keycloak` for the event listener, `reconciler`), Keycloak serves HTTPS
on its port, and `.stack/env` names the CA files, the SASL user and the https URL. One Keycloak node only.

`stop SERVICE` / `start SERVICE` stop or start one service of a running stack (fault-injection tests use them on
a second stack, see STACK_STATE_DIR). STACK_MONGO_AUTH=true starts SecantusDB with --auth (SCRAM users must be
provisioned beforehand, without it).

Everything is downloaded once through the ordinary package clients (Maven, pip) and cached under `.cache/`;
runtime state (pid files, logs, `.stack/env`) lives under `.stack/`. Every server listens on 127.0.0.1 only,
and `down` stops only the processes whose pid files `up` wrote. Standard library only, so it runs before the
project's virtualenv exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The parts live in stacklib/ beside this file (one module per service); the folder is put on the path so
# the script runs from anywhere and a test can load it by file name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stacklib.commands import main
from stacklib.kafka import KAFKA_VERSION, TOPICS  # noqa: F401  (constants other tools read from here)
from stacklib.keycloak import KEYCLOAK_VERSION, LISTENER_JAR, REALM, REALM_FILE  # noqa: F401

if __name__ == "__main__":
    sys.exit(main(sys.argv, __doc__ or ""))
