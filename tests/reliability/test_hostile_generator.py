"""The hostile generator's promises agree with the parser (no stack needed; runs in `make test`).

Scenario 7 asserts each generated message's fate (applied, ignored, or dead-lettered with one of the reasons
its kind allows). A generator that sometimes produces a different message than it claims (random text that
happens to be valid JSON, say) would make that scenario fail one run in several for no fault of the consumer:
this checks many seeds offline, in seconds, with the consumer's own parser.
"""

from __future__ import annotations

import random
import uuid

import pytest

from reconciler.domain.events import parse_record
from tests.reliability.hostile import APPLY, DEAD_LETTER, IGNORE, HostileGenerator

REALM = "t-hostile-generator"


@pytest.mark.parametrize("seed", range(6))
def test_every_generated_message_meets_the_fate_it_promises(seed: int) -> None:
    generator = HostileGenerator(REALM, random.Random(seed))
    messages = [generator.hostile() for _ in range(10_000)]
    messages += [generator.valid(str(uuid.uuid4())) for _ in range(50)]
    broken: list[str] = []
    for message in messages:
        result = parse_record(message.value, realms=frozenset({REALM}))
        fate = APPLY if result.hints else IGNORE if result.ignored else DEAD_LETTER
        reason = result.invalid.value if result.invalid is not None else None
        if fate != message.expect or (fate == DEAD_LETTER and reason not in message.reasons):
            broken.append(f"{message.kind}: promised {message.expect}, got {fate} {reason or ''}")
    assert not broken, broken[:10]
