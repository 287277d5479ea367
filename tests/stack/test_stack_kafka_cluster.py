"""The stack's three-broker Kafka shape (STACK_KAFKA_BROKERS=3): every topic the listener writes survives a
broker down. Skipped on a single-broker stack. Run with `STACK_KAFKA_BROKERS=3 make test`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

pytestmark = pytest.mark.stack
STACK_TOPICS = ("KAFKA_USER_EVENTS_TOPIC", "KAFKA_ADMIN_EVENTS_TOPIC", "KAFKA_DEAD_LETTER_TOPIC")


@pytest.fixture
async def admin(stack_env: dict[str, str]) -> AsyncIterator[AIOKafkaAdminClient]:
    if len(stack_env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) < 3:
        pytest.skip("the stack in use has one Kafka broker (STACK_KAFKA_BROKERS=3 starts three)")
    client = AIOKafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    await client.start()
    yield client
    await client.close()


async def test_three_brokers_form_one_cluster(admin: AIOKafkaAdminClient) -> None:
    cluster = await admin.describe_cluster()
    assert sorted(broker["node_id"] for broker in cluster["brokers"]) == [1, 2, 3]


async def test_stack_topics_have_three_replicas_and_need_two_in_sync(
    admin: AIOKafkaAdminClient, stack_env: dict[str, str]
) -> None:
    topics = [stack_env[key] for key in STACK_TOPICS]
    for description in await admin.describe_topics(topics):
        assert description["error_code"] == 0, description
        assert {len(p["replicas"]) for p in description["partitions"]} == {3}, description["topic"]
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    for response in await admin.describe_configs(resources):
        for _, _, _, _, entries in response.resources:
            values = {entry[0]: entry[1] for entry in entries}
            assert values["min.insync.replicas"] == "2"
