"""The frame every reliability scenario shares: its random seed, its `reconciler run` consumer under audit
(with the load stopped and the process terminated however the scenario ends), the faults (a stack service
away, the consumer SIGKILLed and restarted), the expected final versions, the end of a stream (the store
converged, the group caught up, a clean drain and a last offset audit: nothing lost), the end of a stream
through a Kafka fault, a full reconcile paging slowly enough to be hit mid-run, and the closing checks
(verify, requests seen by Keycloak, secrets in logs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.base.config import Settings
from tests.reliability.harness import (
    CliResult,
    CommitCheck,
    OffsetAudit,
    Outage,
    ReconcilerProcess,
    SecretsRegistry,
    StoreWatcher,
    UpdateStream,
    audit_requests,
    collect_run_errors,
    import_users,
    keycloak_versions,
    run_cli,
    scenario_settings,
    seed_users,
    store_versions,
    value,
    verify_in_sync,
    wait_applied,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

if TYPE_CHECKING:
    from tests.reliability.conftest import ReliabilityStack


@dataclass
class ScenarioEnv:
    """What a scenario works with (the `env` fixture): the module's realm and store collection on the
    reliability stack, the Keycloak admin client, the recording proxy, the secrets registry, the stack for
    fault injection and the scenario's figures."""

    settings: Settings
    kc_admin: KeycloakTestAdmin
    users: Any
    proxy: RecordingProxy
    secrets: SecretsRegistry
    stack: ReliabilityStack
    realm: str
    figures: dict[str, Any]
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = scenario_rng(self.figures)

    def settings_for(self, **overrides: Any) -> Settings:
        """A reconciler's settings for this scenario (see harness.scenario_settings)."""
        return scenario_settings(self.settings, self.proxy, **overrides)

    async def import_seed_users(self, count: int, prefix: str) -> list[dict[str, Any]]:
        """`count` users with fixed ids imported into the realm (a partial import: no user events)."""
        users = seed_users(count, prefix)
        await import_users(self.kc_admin, users, settings=self.settings)
        return users

    def outage(self, service: str, *, crash: bool = False) -> Outage:
        """`async with env.outage(service):` the service is away inside (stopped, or SIGKILLed with `crash`)
        and started again on leaving unless the scenario ended the outage itself (`Outage.end`)."""
        return Outage(self.stack, service, crash=crash)

    async def restart(self, service: str) -> Outage:
        """The service stopped and started again at once (the Outage, for its times)."""
        async with self.outage(service) as restart:
            pass
        return restart

    async def keycloak_serving_again(self, *, width: int = 200, timeout_s: float = 180) -> int:
        """After its PostgreSQL came back, Keycloak answers one error for each pooled connection that was open
        across the restart, when a request draws it (Agroal validates idle connections only every few
        minutes): after a busy scenario that is dozens of errors, more than one run's retries absorb. Until
        two bursts of `width` reads at once (wider than a node's pool in use) all succeed: the errors seen."""
        errors = 0
        clean = 0

        async def burst() -> int:
            nonlocal errors, clean
            statuses = await self.kc_admin.read_burst(width)
            failed = sum(1 for status in statuses if status != 200)
            errors += failed
            clean = clean + 1 if failed == 0 else 0
            return clean

        await eventually(
            burst, until=lambda n: n >= 2, timeout_s=timeout_s, interval_s=0.5, what="Keycloak serving again"
        )
        return errors

    def consumer(
        self,
        label: str,
        *,
        watch_writes: bool = False,
        before_start: Callable[[], Awaitable[None]] | None = None,
        **overrides: Any,
    ) -> ConsumerUnderAudit:
        """The scenario's `reconciler run` (static member `reliability-<label>-0`, log `<label>.log`).
        `before_start` runs once the audit has read the group's start (e.g. a fault the process starts in);
        then entering does not wait for the group's join."""
        config = self.settings_for(kafka_group_instance_id=f"reliability-{label}-0", **overrides)
        return ConsumerUnderAudit(
            self, config, self.secrets.log_file(label), watch_writes=watch_writes, before_start=before_start
        )

    @contextlib.asynccontextmanager
    async def listings_held(self, delay_s: float) -> AsyncIterator[None]:
        """While inside, the proxy holds every user-listing answer back `delay_s` (a slow Keycloak), so a
        full reconcile is still paging when a fault hits it; single-user reads are not delayed."""

        def hold(method: str, raw_path: str) -> float:
            return delay_s if method == "GET" and is_listing(raw_path) else 0.0

        self.proxy.response_delay = hold
        try:
            yield
        finally:
            self.proxy.response_delay = None

    def listings(self, mark: int) -> int:
        """User-listing requests the proxy saw since `mark` (the pages of full reconciles)."""
        return sum(1 for r in self.proxy.since(mark) if r.method == "GET" and is_listing(r.raw_path))

    async def start_paging_reconcile(
        self, settings: Settings, *, pages: int
    ) -> tuple[asyncio.Task[CliResult], int, int]:
        """Starts `reconcile --once` with `settings` and waits until it has listed `pages` pages (call it
        inside `listings_held`): (the run's task, the proxy mark before it, the pages listed by then)."""
        mark = self.proxy.mark()
        run = asyncio.create_task(run_cli(settings, "reconcile", "--once", "--json", registry=self.secrets))
        listed = await eventually(
            lambda: value(self.listings(mark)),
            until=lambda n: n >= pages or run.done(),
            timeout_s=120,
            interval_s=0.2,
            what="the full reconcile paging",
        )
        assert not run.done() or listed >= pages, f"the run ended after {listed} pages: {run.result()}"
        return run, mark, listed


def is_listing(raw_path: str) -> bool:
    """A user listing (`GET .../users?first=...`), not a single user's read."""
    return raw_path.split("?", 1)[0].endswith("/users")


def scenario_rng(figures: dict[str, Any]) -> random.Random:
    """RELIABILITY_SEED, or a fresh seed; kept in the figures so a failing run can be repeated."""
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    figures["seed"] = seed
    return random.Random(seed)


class ConsumerUnderAudit:
    """A `reconciler run` child with `config`, an OffsetAudit of its group (and a StoreWatcher when asked).

    Entering starts the process and waits until it joined its group; `stop()` stops the load and terminates
    the process (its exit status); leaving does the same if the scenario failed before `stop()`, so a failed
    check never leaves a process or a load behind.
    """

    def __init__(
        self,
        env: ScenarioEnv,
        config: Settings,
        log_file: Path,
        *,
        watch_writes: bool = False,
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.env = env
        self._before_start = before_start
        self.config = config
        self.mark = env.proxy.mark()  # the Keycloak requests of this scenario are the ones after it
        self.process = ReconcilerProcess(config, "run", log_file=log_file)
        self.audit = OffsetAudit(
            config.kafka_bootstrap_servers, config.kafka_group_id, config.event_topics, env.realm, env.users
        )
        self.watcher = StoreWatcher(env.users) if watch_writes else None
        self.started = time.monotonic()
        self.exit_code: int | None = None
        self._load: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> ConsumerUnderAudit:
        await self.audit.__aenter__()
        try:
            if self.watcher is not None:
                await self.watcher.__aenter__()
            if self._before_start is not None:
                await self._before_start()
            await self.process.start()
            if self._before_start is None:
                await self.process.wait_joined()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is not None:  # the scenario failed: what the process decided goes into the report
            print(f"--- {self.process.log_file.name}: the reconciler's own lines ---")
            print(self.process.own_notices())
        await self._close()

    def start_load(self, load: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs `load` (e.g. an UpdateStream) in the background; `finish_load()` waits for it."""
        assert self._load is None, "one load per scenario"
        self._load = asyncio.create_task(load)
        return self._load

    async def stream_updates(
        self, users: list[dict[str, Any]], total: int, *, rate_per_s: float, flowing_after: int = 0
    ) -> UpdateStream:
        """Starts an UpdateStream of `total` updates as the load; with `flowing_after`, returns once that many
        updates are done and the consumer has committed something."""
        stream = UpdateStream(self.env.kc_admin, users, total, rate_per_s=rate_per_s, rng=self.env.rng)
        self.start_load(stream.run())
        if flowing_after:
            await eventually(
                lambda: value(stream.done >= flowing_after), timeout_s=120, what="events flowing"
            )
            await eventually(
                self.audit.committed_total, until=lambda n: n > 0, timeout_s=120, what="first commits"
            )
        return stream

    @property
    def load_running(self) -> bool:
        return self._load is not None and not self._load.done()

    async def finish_load(self) -> None:
        assert self._load is not None
        await self._load

    async def stop(self) -> int:
        """Stops the load and SIGTERMs the consumer: its exit status (0 after a clean drain)."""
        if self._load is not None and not self._load.done():
            self._load.cancel()  # a failed check stops the load too
        if self.process.alive:
            self.exit_code = await self.process.terminate()
        return self.exit_code if self.exit_code is not None else -1

    async def _close(self) -> None:
        try:
            await self.stop()
        finally:
            if self.watcher is not None:
                await self.watcher.__aexit__(None, None, None)
            await self.audit.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def crashed(self) -> AsyncIterator[CommitCheck]:
        """SIGKILLs the consumer and gives the offset audit of that moment (the process is dead: the store holds
        exactly what it applied, so every committed update must be in it); leaving restarts the consumer and
        waits until it joined its group again (not after a failed check: the scenario ends there)."""
        await self.process.kill()
        yield await self.audit.check()
        await self.process.start()
        await self.process.wait_joined()

    async def converge(
        self,
        stream: UpdateStream,
        *,
        what: str = "store equals Keycloak",
        timeout_s: float = 180,
        lag_timeout_s: float = 180,
    ) -> Convergence:
        """The end of a stream: the load finishes, the store converges to the versions Keycloak holds (the
        stream's last ones) and the group catches up (lag 0)."""
        await self.finish_load()
        finished_at = time.monotonic()
        expected = await expected_versions(self.env.kc_admin, stream)
        expected_at = time.monotonic()
        await wait_converged(self.env.users, expected, timeout_s, what)
        converged_at = time.monotonic()
        await self.audit.wait_caught_up(lag_timeout_s)
        return Convergence(expected, finished_at, expected_at, converged_at, time.monotonic())

    async def stop_cleanly(self) -> None:
        """The change stream (if any) has seen every write, then the consumer drains and exits 0 on SIGTERM."""
        if self.watcher is not None:
            await self.watcher.drain()
        exit_code = await self.stop()
        assert exit_code == 0, self.process.tail()

    async def stop_audited(self) -> CommitCheck:
        """Nothing lost at the end: `stop_cleanly`, and with the consumer gone every committed update is in the
        store (a last offset audit)."""
        await self.stop_cleanly()
        final = await self.audit.check()
        assert not final.violations, final.violations[:10]
        return final

    @property
    def writes(self) -> StoreWatcher:
        """The change stream's recorder (a consumer made with `watch_writes=True`)."""
        assert self.watcher is not None, "this consumer watches no writes (watch_writes=True)"
        return self.watcher

    async def finish_through_kafka_fault(self, stream: UpdateStream) -> KafkaFaultEnd:
        """The end of a stream that lived through a broker fault (stop, SIGKILL): the load finishes, every
        event that reached Kafka is applied, the group catches up, the same process was never restarted and
        drains cleanly, the offset audit holds; then the users whose last change never reached Kafka
        (Keycloak's listener gives up after 10 s without metadata) are left to one full reconcile, and the
        store must equal Keycloak."""
        env, reconciler = self.env, self.process
        await self.finish_load()
        expected = await expected_versions(env.kc_admin, stream)
        in_kafka = await self.audit.topic_versions()
        await wait_applied(env.users, in_kafka, 180, "every event in Kafka applied")
        await self.audit.wait_caught_up(180)
        reconciler.assert_never_restarted()
        await self.stop_audited()
        events = await self.audit.count_updates()
        stored = await store_versions(env.users, expected)
        missed_by_listener = sorted(u for u, v in expected.items() if in_kafka.get(u, 0) < v)
        assert all(stored.get(u) == v for u, v in expected.items() if u not in missed_by_listener)
        if missed_by_listener:  # the safety net catches what never reached Kafka
            run = await run_cli(env.settings_for(), "reconcile", "--once", "--json", registry=env.secrets)
            assert run.code == 0, run.stderr[-2000:]
        await wait_converged(env.users, expected, 30, "store equals Keycloak")
        return KafkaFaultEnd(events, len(missed_by_listener))

    def elapsed_s(self) -> float:
        return round(time.monotonic() - self.started, 1)

    async def closing_checks(self, *, run_errors: bool = False) -> dict[str, Any]:
        """What ends every scenario: `reconciler verify` exits 0, every request Keycloak saw since this
        consumer was set up is an allowed read of the realm with a canonical id, and no secret is in its log
        (nor in the run records' errors, with `run_errors`). Returns the figures these checks produce."""
        env = self.env
        report = await verify_in_sync(env.settings_for(), env.secrets)
        requests, _, problems = audit_requests(env.proxy.since(self.mark), env.realm)
        assert not problems, f"requests that must not reach Keycloak: {problems[:10]}"
        if run_errors:
            await collect_run_errors(env.users, env.secrets, self.process.log_file.stem)
        lines = env.secrets.assert_clean([self.process.log_file])
        return {"verify": report["in_sync"], "keycloak_requests": requests, "log_lines_scanned": lines}


@dataclass(frozen=True, slots=True)
class Convergence:
    """What `converge` found: per updated user the version Keycloak holds, and when (monotonic) the load
    finished, the expected versions were read, the store equalled them and the group's lag was 0."""

    expected: dict[str, int]
    finished_at: float
    expected_at: float
    converged_at: float
    caught_up_at: float


@dataclass(frozen=True, slots=True)
class KafkaFaultEnd:
    """What `finish_through_kafka_fault` found: update events in the topic, users left to the reconcile."""

    update_events_in_topic: int
    users_left_to_the_full_reconcile: int

    def figures(self) -> dict[str, int]:
        """The figures every such scenario reports (the process was never restarted, nothing was lost)."""
        return {
            "update_events_in_topic": self.update_events_in_topic,
            "users_left_to_the_full_reconcile": self.users_left_to_the_full_reconcile,
            "reconciler_restarts": 0,
            "lost": 0,
        }


async def expected_versions(kc_admin: KeycloakTestAdmin, stream: UpdateStream) -> dict[str, int]:
    """Per updated user, the lastName version Keycloak holds; it must be what the stream wrote last."""
    truth = await keycloak_versions(kc_admin)
    expected = {user: version for user, version in truth.items() if version > 0}
    assert expected == stream.versions, "Keycloak does not hold the stream's last versions"
    return expected
