"""The whole API fuzzed from its own OpenAPI description (schemathesis): no generated request,
signed in as the DPO (who may do everything) or not signed in, may answer 5xx (issue #15
item 7). The server runs on the test's event loop; schemathesis's blocking client runs in a
thread beside it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.generation import GenerationMode

from callrec.http.openapi import DOCUMENT
from tests.integration.access_world import world

# Examples per operation and credential: 13 operations x 2 x this, about 20 s on the CI
# machine (docs/testing.md#api-fuzzing).
EXAMPLES = 40


def fuzz(base_url: str, headers: dict[str, str], statuses: Counter[int]) -> list[str]:
    """Every operation's generated cases; the ones answered 5xx, one line each."""
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # Both what the description allows and what it does not (wrong types, missing fields).
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        def check(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {case!r:.300}"
                )

        run: Callable[[], None] = hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases every run: a failure reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(hypothesis.given(case=cases)(check))
        run()
    return failures


async def test_no_generated_request_answers_5xx(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w:
        base_url = str(w.client.make_url("")).rstrip("/")
        statuses: Counter[int] = Counter()
        for headers in (w.auth("dana"), {}):
            failures = await asyncio.to_thread(fuzz, base_url, headers, statuses)
            assert failures == [], "\n".join(failures[:20])
        # The cases reached the handlers: answers, refusals of bad fields, unknown ids.
        assert {200, 400, 401, 404} <= set(statuses), statuses
        # Every answered request was audited: a 5xx would show as outcome "error" too.
        errors = await w.pool.fetchval("SELECT count(*) FROM audit_log WHERE status >= 500")
        assert errors == 0
