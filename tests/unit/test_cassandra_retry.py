"""`execute_retrying`, the retry discipline the sink and the fraud archive share: transient errors
are retried with backoff (for ever by default), others and the last allowed attempt are raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut, ReadTimeout

from streams.io.cassandra import READ_TRANSIENT, execute_retrying, prepare_retrying

SILENT = object()  # a request Cassandra never answers


class Response:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def add_callbacks(self, done: Any, failed: Any) -> None:
        if self.outcome is SILENT:
            return
        if isinstance(self.outcome, BaseException):
            failed(self.outcome)
        else:
            done(self.outcome)


class FakeSession:
    """Answers each call with the next outcome of ``outcomes``."""

    default_timeout = 0.05

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes: list[Any] = list(outcomes)
        self.calls: list[tuple[Any, Any]] = []
        self.timeouts: list[Any] = []

    def execute_async(self, statement: Any, params: Any = None, timeout: Any = "default") -> Response:
        self.calls.append((statement, params))
        self.timeouts.append(timeout)
        return Response(self.outcomes.pop(0))


def session_of(*outcomes: Any) -> Any:
    return FakeSession(*outcomes)


def test_transient_errors_are_retried_until_the_answer() -> None:
    session = session_of(OperationTimedOut("t"), ReadTimeout("r"), ["row"])
    retried: list[BaseException] = []
    rows = asyncio.run(
        execute_retrying(
            session, "SELECT", "r", ("v", "t1"), on_retry=retried.append, transient=READ_TRANSIENT
        )
    )
    assert rows == ["row"] and len(session.calls) == 3 and session.calls[0] == ("SELECT", ("v", "t1"))
    assert [type(e) for e in retried] == [OperationTimedOut, ReadTimeout]


def test_the_last_allowed_attempt_and_other_errors_are_raised() -> None:
    with pytest.raises(OperationTimedOut):
        asyncio.run(
            execute_retrying(
                session_of(OperationTimedOut("a"), OperationTimedOut("b")), "W", "w", max_attempts=2
            )
        )
    session = session_of(InvalidRequest("bad"), ["never"])
    with pytest.raises(InvalidRequest):
        asyncio.run(execute_retrying(session, "W", "w"))
    assert len(session.calls) == 1


def test_a_write_does_not_retry_a_read_timeout() -> None:
    session = session_of(ReadTimeout("r"), ["never"])
    with pytest.raises(ReadTimeout):
        asyncio.run(execute_retrying(session, "W", "w"))


def test_a_request_without_an_answer_times_out_on_the_event_loop_and_is_retried() -> None:
    session = session_of(SILENT, ["row"])
    retried: list[BaseException] = []
    rows = asyncio.run(execute_retrying(session, "W", "w", on_retry=retried.append))
    assert rows == ["row"] and [type(e) for e in retried] == [OperationTimedOut]
    # the driver keeps no timer of its own (a reference cycle per request, see `execute`)
    assert session.timeouts == [None, None]


class Preparing:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def prepare(self, cql: str) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_a_prepare_that_times_out_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.io.cassandra.time.sleep", lambda s: None)
    session = Preparing(OperationTimedOut("slow"), OperationTimedOut("slow"), "prepared")
    assert prepare_retrying(session, "SELECT 1") == "prepared"  # type: ignore[arg-type]
    assert session.calls == 3
    failing = Preparing(*[OperationTimedOut("down")] * 3)
    with pytest.raises(OperationTimedOut):
        prepare_retrying(failing, "SELECT 1", attempts=3)  # type: ignore[arg-type]
    assert failing.calls == 3
    invalid = Preparing(InvalidRequest("no such table"))
    with pytest.raises(InvalidRequest):  # not transient: at once
        prepare_retrying(invalid, "SELECT 1")  # type: ignore[arg-type]
    assert invalid.calls == 1
