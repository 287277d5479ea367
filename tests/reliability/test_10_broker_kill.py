"""Scenario 10 (production shape only): one of three Kafka brokers SIGKILLed mid-stream, then restarted.

`reconciler run` (consumer only) applies a stream of real updates while one broker, chosen by the seed, is
killed without warning: its partitions' leadership moves to the other two (replication factor 3,
min.insync.replicas 2, so the listener's acks=all writes keep succeeding), and the consumer rides out the
NOT_LEADER_OR_FOLLOWER errors and a possible coordinator move without a restart. The broker then comes back
and catches up. Nothing is lost, the offset audit holds, and `verify` exits 0. Skipped unless the reliability
stack has three brokers: `RELIABILITY_KAFKA_BROKERS=3 make reliability` (see RELIABILITY.md).
"""

from __future__ import annotations

import time

import pytest
from aiokafka.errors import KafkaError

from tests.reliability.scenario import ScenarioEnv
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200
BROKERS = 3


@pytest.fixture
def brokers(stack_env: dict[str, str]) -> int:
    count = len(stack_env["KAFKA_BOOTSTRAP_SERVERS"].split(","))
    if count < BROKERS:
        pytest.skip("the reliability stack has one Kafka broker (RELIABILITY_KAFKA_BROKERS=3 makes three)")
    return count


async def test_a_killed_broker_the_consumer_keeps_going_and_nothing_is_lost(
    env: ScenarioEnv, brokers: int
) -> None:
    users = await env.import_seed_users(USERS, "brokerkill")
    victim = f"kafka-{env.rng.randint(1, brokers)}"
    async with env.consumer("10-broker-kill") as scenario:
        audit = scenario.audit
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=25, flowing_after=300)
        committed_at_kill = await audit.committed_total()
        done_at_kill = stream.done

        async def committed() -> int | None:
            """The audit's own admin client may still ask the dead broker first: that is not the consumer's
            failure, so it only delays this probe."""
            try:
                return await audit.committed_total()
            except KafkaError:
                return None

        async with env.outage(victim, crash=True) as broker:
            await eventually(
                committed,
                until=lambda n: n is not None and n > committed_at_kill,
                timeout_s=180,
                interval_s=0.5,
                what=f"commits with {victim} dead",
            )
            commits_resumed_s = time.monotonic() - broker.began
        updates_while_down = stream.done - done_at_kill
        end = await scenario.finish_through_kafka_fault(stream)
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        killed=victim,
        broker_down_s=round(broker.cycle_s, 1),
        updates_while_down=updates_while_down,
        first_commit_after_kill_s=round(commits_resumed_s, 1),
        duration_s=scenario.elapsed_s(),
        **end.figures(),
        **checks,
    )
