"""Scenario 7: 10,000 hostile messages interleaved with 500 valid events; the consumer must never stop.

Hostile: random bytes, broken and deeply nested JSON, 1.6 MB payloads, JSON that is not an object, events
with wrong field types or no realm, resource paths and user ids with `/`, `..`, `%2F`, `%00`, `?`, `\\`,
full-width digits, and (to be ignored, not dead-lettered) other realms' events, logins, client events and
tombstones. Valid: admin and user events naming 250 users that really exist in Keycloak (made by partial
import, so these events are their only trace). Dedicated topics (accepting 3 MB messages) and dead-letter
topic. Checked: the process keeps running and stays live; every valid user is applied; every invalid message
is dead-lettered exactly once with a reason from its kind, and nothing else is; the group's lag reaches 0;
and a recording proxy in front of Keycloak proves that only canonical UUIDs of the valid users reached any
/admin/realms/<realm>/users/<id> path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from tests.reliability.harness import (
    audit_requests,
    import_users,
    seed_users,
)
from tests.reliability.hostile import ADMIN, APPLY, DEAD_LETTER, HostileGenerator, Message
from tests.reliability.scenario import ScenarioEnv
from tests.support.kafka_clients import connection
from tests.support.kafka_offsets import PartitionReader, create_topics, delete_topics, end_offsets
from tests.support.polling import eventually
from tests.support.ports import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

HOSTILE = 10_000
VALID_USERS = 250
VALID = 500
BIG_TOPIC = {"max.message.bytes": str(3 * 1024 * 1024)}


async def test_hostile_messages_never_stop_the_consumer_and_never_reach_keycloak(env: ScenarioEnv) -> None:
    started = time.monotonic()
    suffix = uuid.uuid4().hex[:8]
    topics = {ADMIN: f"rel.hostile.{suffix}.admin", "user": f"rel.hostile.{suffix}.user"}
    dlq = f"rel.hostile.{suffix}.dlq"
    bootstrap = env.settings.kafka_bootstrap_servers
    await create_topics(bootstrap, {topics[ADMIN]: 3, topics["user"]: 3}, BIG_TOPIC)
    await create_topics(bootstrap, {dlq: 1})
    valid_users = seed_users(VALID_USERS, "valid")
    for user in valid_users:
        user["firstName"] = "Valid"
    await import_users(env.kc_admin, valid_users)
    valid_ids = [u["id"] for u in valid_users]

    generator = HostileGenerator(env.realm, env.rng)
    messages = [generator.hostile() for _ in range(HOSTILE)]
    named = valid_ids + [env.rng.choice(valid_ids) for _ in range(VALID - VALID_USERS)]
    messages += [generator.valid(user_id) for user_id in named]
    env.rng.shuffle(messages)

    http_port = free_port()
    async with env.consumer(
        "7-bad-input",
        kafka_admin_events_topic=topics[ADMIN],
        kafka_user_events_topic=topics["user"],
        kafka_dead_letter_topic=dlq,
        http_enabled=True,
        http_port=http_port,
    ) as scenario:
        reconciler, audit = scenario.process, scenario.audit
        sources = await _produce(bootstrap, topics, messages)
        produced_s = time.monotonic() - started
        expected_dead = {key: m for key, m in sources.items() if m.expect == DEAD_LETTER}

        async def progress() -> tuple[int, int]:
            # Fail at once, not at the deadline, when the consumer died or a bad request went out.
            assert reconciler.alive, f"the consumer stopped:\n{reconciler.tail()}"
            _, _, problems = audit_requests(env.proxy.since(scenario.mark), env.realm)
            assert not problems, f"requests that must not reach Keycloak: {problems[:10]}"
            # Dead letters are stored before their offsets advance: at lag 0 they are all there. So the lag is
            # read first: read after the count, it could see commits of dead letters stored since.
            lag = await audit.lag()
            dead = sum((await end_offsets(bootstrap, [dlq])).values())
            assert lag > 0 or dead >= len(expected_dead), (
                f"{dead} dead letters, {len(expected_dead)} expected"
            )
            return dead, lag

        await eventually(
            progress,
            until=lambda p: p[0] >= len(expected_dead) and p[1] == 0,
            timeout_s=600,
            interval_s=1,
            what="every message consumed and every invalid one dead-lettered",
        )
        consumed_s = time.monotonic() - started - produced_s
        applied = await eventually(
            lambda: env.users.count_documents({"external_id": {"$in": valid_ids}, "first_name": "Valid"}),
            until=lambda n: n == VALID_USERS,
            timeout_s=60,
            what="every valid user applied",
        )
        async with httpx.AsyncClient(timeout=10) as http:
            live = await http.get(f"http://127.0.0.1:{http_port}/healthz")
        assert live.status_code == 200, live.text
        reconciler.assert_never_restarted()
        await scenario.stop_cleanly()

    # Every invalid message was dead-lettered exactly once, with a reason its kind allows; nothing else was.
    async with PartitionReader(bootstrap) as reader:
        dead_letters = await reader.read(
            {TopicPartition(dlq, 0): (0, sum((await end_offsets(bootstrap, [dlq])).values()))}
        )
    seen: Counter[tuple[str, int, int]] = Counter()
    wrong_reason: list[str] = []
    reasons: Counter[str] = Counter()
    for record in dead_letters:
        headers = {k: v.decode() for k, v in record.headers}
        source = (
            headers["dlq-source-topic"],
            int(headers["dlq-source-partition"]),
            int(headers["dlq-source-offset"]),
        )
        seen[source] += 1
        reasons[headers["dlq-reason"]] += 1
        assert headers.get("dlq-detail"), headers
        message = expected_dead.get(source)
        if message is not None and headers["dlq-reason"] not in message.reasons:
            wrong_reason.append(f"{message.kind}: {headers['dlq-reason']} ({headers['dlq-detail'][:80]})")
    unexpected = [sources.get(s) and sources[s].kind for s in seen if s not in expected_dead]
    missing = [m.kind for s, m in expected_dead.items() if s not in seen]
    duplicated = [s for s, n in seen.items() if n > 1]
    assert not missing, (
        f"{len(missing)} invalid messages not dead-lettered: {Counter(missing).most_common(10)}"
    )
    assert not unexpected, (
        f"{len(unexpected)} messages dead-lettered that should not be: {Counter(unexpected)}"
    )
    assert not duplicated, f"dead-lettered more than once: {duplicated[:10]}"
    assert not wrong_reason, f"{len(wrong_reason)} with an unexpected reason: {wrong_reason[:10]}"

    # Only canonical ids of the valid users reached Keycloak.
    _, requested_ids, _ = audit_requests(env.proxy.since(scenario.mark), env.realm)
    assert requested_ids <= set(valid_ids), (
        f"ids looked up that no valid event named: {sorted(requested_ids - set(valid_ids))[:10]}"
    )
    assert requested_ids == set(valid_ids)
    checks = await scenario.closing_checks()
    await delete_topics(bootstrap, [*topics.values(), dlq])
    kinds = Counter(
        m.kind.split(" '")[0] if m.kind.startswith("resourcePath") else m.kind
        for m in messages
        if m.expect != APPLY
    )
    env.figures.update(
        hostile=HOSTILE,
        valid=VALID,
        valid_users_applied=applied,
        expected_dead_letters=len(expected_dead),
        dead_letters=len(dead_letters),
        ignored=sum(1 for m in messages if m.expect not in (APPLY, DEAD_LETTER)),
        dead_letter_reasons=dict(reasons),
        hostile_kinds=dict(kinds.most_common()),
        user_ids_requested=len(requested_ids),
        invalid_ids_reaching_keycloak=0,
        consumer_restarts=reconciler.starts - 1,
        produce_s=round(produced_s, 1),
        consume_s=round(consumed_s, 1),
        duration_s=round(time.monotonic() - started, 1),
        **checks,
    )


async def _produce(
    bootstrap: str, topics: dict[str, str], messages: list[Message]
) -> dict[tuple[str, int, int], Message]:
    """Publish in order; returns (topic, partition, offset) -> message."""
    producer = AIOKafkaProducer(
        **connection(bootstrap), acks="all", linger_ms=20, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        # A tombstone (null value) needs a key; everything else goes without one, as Keycloak's providers send.
        futures = [
            await producer.send(topics[m.topic], m.value, key=None if m.value is not None else b"tombstone")
            for m in messages
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(md.topic, md.partition, md.offset): m for md, m in zip(metadata, messages, strict=True)}
