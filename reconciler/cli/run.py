"""`reconciler run`: the service, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from reconciler.cli.common import Subcommand, load_settings
from reconciler.service import run_service


def run_command(_: argparse.Namespace) -> int:
    return asyncio.run(run_service(load_settings()))


COMMAND = Subcommand(
    "run",
    help="the service: Kafka consumer + periodic full reconcile + health/metrics server, until SIGTERM",
    description="Runs the event path (CONSUMER_ENABLED), the periodic full reconcile (RECONCILE_ENABLED) and "
    "the /healthz, /readyz, /metrics server (HTTP_ENABLED) in one process. Keycloak's answer to the client "
    "is checked first (a refusal exits 3); an outage of Keycloak or the store keeps it up and not ready. "
    "SIGTERM drains and commits within CONSUMER_DRAIN_TIMEOUT_S.",
    handler=run_command,
)
