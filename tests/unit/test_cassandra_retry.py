"""`execute_retrying`, the retry discipline the sink and the fraud archive share: transient errors
are retried with backoff (for ever by default), others and the last allowed attempt are raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut, ReadTimeout

from streams.io.cassandra import execute_retrying


class Response:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def add_callbacks(self, done: Any, failed: Any) -> None:
        if isinstance(self.outcome, BaseException):
            failed(self.outcome)
        else:
            done(self.outcome)


class Session:
    """Answers each call with the next outcome of ``outcomes``."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[Any, Any]] = []

    def execute_async(self, statement: Any, params: Any = None) -> Response:
        self.calls.append((statement, params))
        return Response(self.outcomes.pop(0))


def test_transient_errors_are_retried_until_the_answer() -> None:
    session = Session(OperationTimedOut("t"), ReadTimeout("r"), ["row"])
    retried: list[BaseException] = []
    rows = asyncio.run(execute_retrying(session, "SELECT", "reading", ("v", "t1"), on_retry=retried.append))  # type: ignore[arg-type]
    assert rows == ["row"] and len(session.calls) == 3 and session.calls[0] == ("SELECT", ("v", "t1"))
    assert [type(e) for e in retried] == [OperationTimedOut, ReadTimeout]


def test_the_last_allowed_attempt_and_other_errors_are_raised() -> None:
    with pytest.raises(OperationTimedOut):
        asyncio.run(
            execute_retrying(
                Session(OperationTimedOut("a"), OperationTimedOut("b")), "W", "w", max_attempts=2
            )
        )  # type: ignore[arg-type]
    session = Session(InvalidRequest("bad"), ["never"])
    with pytest.raises(InvalidRequest):
        asyncio.run(execute_retrying(session, "W", "w"))  # type: ignore[arg-type]
    assert len(session.calls) == 1
