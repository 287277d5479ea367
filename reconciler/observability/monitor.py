"""What `reconciler run` knows about its dependencies' failures: readiness, a gauge, and calm logs.

Every path reports its failures here (`failed(error)`) and its successes (`succeeded(component)`). While a
component fails, `/readyz` answers 503 with the reason, `reconciler_dependency_failing{component,kind}` is 1,
and one error line is logged per `PERMANENT_FAILURE_LOG_INTERVAL_S` at most, however many users and retries
hit it. Recovery needs no restart: the work queue keeps retrying, and the readiness check itself probes a
failing component at most every `probe_interval_s`, so the state clears as soon as the cause is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reconciler.base.errors import Component, PermanentError, ReconcilerError, TemporaryError, kind
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

Probe = Callable[[], Awaitable[object]]


@dataclass(slots=True)
class _Failure:
    kind: str
    reason: str
    since: float
    logged_at: float
    occurrences: int = 1


class FailureMonitor:
    """Failing components (Keycloak, store) of this process, fed by every path."""

    def __init__(self, log_interval_s: float = 60.0, probe_interval_s: float = 10.0) -> None:
        self._log_interval_s = log_interval_s
        self._probe_interval_s = probe_interval_s
        self._failures: dict[Component, _Failure] = {}
        self._probes: dict[Component, Probe] = {}
        self._probed_at: dict[Component, float] = {}

    def add_probe(self, component: Component, probe: Probe) -> None:
        """A cheap check the readiness endpoint may run to see whether a failing component is back."""
        self._probes[component] = probe

    def failed(self, error: BaseException) -> None:
        """Record a failure; only outages and refusals make the process not ready."""
        if not isinstance(error, TemporaryError | PermanentError):
            return
        component = error.component if isinstance(error, ReconcilerError) else Component.INTERNAL
        now = time.monotonic()
        reason = str(error)
        current = self._failures.get(component)
        if current is None or current.kind != kind(error):
            if current is not None:
                metrics.DEPENDENCY_FAILING.labels(component=component.value, kind=current.kind).set(0)
            current = self._failures[component] = _Failure(kind(error), reason, now, now)
            metrics.DEPENDENCY_FAILING.labels(component=component.value, kind=current.kind).set(1)
            self._log(component, current, first=True)
            return
        current.reason = reason
        current.occurrences += 1
        if now - current.logged_at >= self._log_interval_s:
            current.logged_at = now
            self._log(component, current, first=False)

    def succeeded(self, *components: Component) -> None:
        """These components answered: whatever failure they had is over."""
        for component in components:
            failure = self._failures.pop(component, None)
            if failure is not None:
                metrics.DEPENDENCY_FAILING.labels(component=component.value, kind=failure.kind).set(0)
                log.info(
                    "dependency recovered",
                    component=component.value,
                    failed_for_s=round(time.monotonic() - failure.since, 1),
                    occurrences=failure.occurrences,
                )

    def failing(self, component: Component) -> str | None:
        """The reason `component` is failing now, or None."""
        failure = self._failures.get(component)
        return None if failure is None else f"{failure.kind}: {failure.reason}"

    async def readiness(self, component: Component) -> tuple[bool, str]:
        """Readiness check of one component; probes it when it is failing and a probe is due."""
        if component not in self._failures:
            return True, "ok"
        probe = self._probes.get(component)
        now = time.monotonic()
        if probe is not None and now - self._probed_at.get(component, 0.0) >= self._probe_interval_s:
            self._probed_at[component] = now
            try:
                await probe()
            except Exception as error:
                self.failed(error)
            else:
                self.succeeded(component)
                return True, "ok"
        return False, self.failing(component) or "failing"

    @staticmethod
    def _log(component: Component, failure: _Failure, *, first: bool) -> None:
        log.error(
            "dependency failing" if first else "dependency still failing",
            component=component.value,
            kind=failure.kind,
            reason=failure.reason,
            failing_for_s=round(time.monotonic() - failure.since, 1),
            occurrences=failure.occurrences,
        )
