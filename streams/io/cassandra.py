"""Cassandra session, schema, and requests with timeouts and retries (cassandra-driver).
The sink is in `cassandra_sink`."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from string import Template
from typing import Any

from cassandra import (
    AuthenticationFailed,
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    Unauthorized,
    Unavailable,
    WriteTimeout,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement, Statement

from streams.errors import ConfigError, RuntimeServiceError
from streams.netcheck import port_open
from streams.settings import CassandraSettings

log = logging.getLogger(__name__)

_TRANSIENT = (OperationTimedOut, WriteTimeout, Unavailable, NoHostAvailable)  # of a write
READ_TRANSIENT = (OperationTimedOut, ReadTimeout, Unavailable, NoHostAvailable)


class _ExpectedBatchWarning(logging.Filter):
    """Drops the server's warning about unlogged batches across partitions: the sink sends them on
    purpose (rows grouped by their first replica, see `CassandraSink`), so on a small cluster every
    batch would log it. Other server warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Server warning: Unlogged batch covering"))


logging.getLogger("cassandra.protocol").addFilter(_ExpectedBatchWarning())
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def connect(cassandra: CassandraSettings, *, keyspace: str | None = None) -> tuple[Cluster, Session]:
    auth = None
    if cassandra.username:
        password = cassandra.password.get_secret_value() if cassandra.password else ""
        auth = PlainTextAuthProvider(username=cassandra.username, password=password)
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()))
    cluster = Cluster(
        list(cassandra.hosts),
        port=cassandra.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        # Come back within seconds after a node restart (the default waits up to 10 minutes).
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
        auth_provider=auth,
        connect_timeout=cassandra.connect_timeout_s,
        protocol_version=5,
        # Without TCP_NODELAY a request written in several segments waits for the server's delayed
        # ACK (40 ms on Linux): measured as a 40 ms step in every other fraud checkpoint.
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ssl_context=ssl.create_default_context(cafile=cassandra.ssl_ca_file)
        if cassandra.ssl_ca_file
        else None,
    )
    try:
        return cluster, cluster.connect(keyspace)
    except NoHostAvailable as exc:
        cluster.shutdown()
        hosts = ",".join(cassandra.hosts)
        reasons = list(exc.errors.values()) if isinstance(exc.errors, dict) else []
        if any(isinstance(reason, AuthenticationFailed) for reason in reasons):
            raise ConfigError(
                f"Cassandra at {hosts}:{cassandra.port} refused the credentials of user "
                f"{cassandra.username!r}; check STREAMS_CASSANDRA__USERNAME / PASSWORD"
            ) from None
        first = reasons[0] if reasons else exc
        raise RuntimeServiceError(f"Cassandra at {hosts}:{cassandra.port} is not reachable: {first}") from exc


def cql_ready(cassandra: CassandraSettings) -> bool:
    """True when Cassandra accepts CQL (quietly: a node that is still starting is not an error)."""
    if not port_open(cassandra.hosts[0], cassandra.port):
        return False
    driver_log = logging.getLogger("cassandra.cluster")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    try:
        cluster, session = connect(cassandra)
    except (RuntimeServiceError, ConfigError):  # refused credentials: the superuser may not exist yet
        return False
    finally:
        driver_log.setLevel(level)
    try:
        return session.execute("SELECT release_version FROM system.local").one() is not None
    finally:
        cluster.shutdown()


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise RuntimeServiceError(f"not a valid Cassandra identifier: {name!r}")
    return name


def schema_statements(schema_dir: Path, keyspace: str, replication_factor: int) -> list[str]:
    """The CQL statements of ``schema_dir/*.cql`` in file order, with ``${keyspace}`` filled in."""
    values = {"keyspace": check_identifier(keyspace), "replication_factor": replication_factor}
    statements: list[str] = []
    for path in sorted(schema_dir.glob("*.cql")):
        text = Template(path.read_text()).substitute(values)
        body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
        statements += [s.strip() for s in body.split(";") if s.strip()]
    return statements


_CREATES = re.compile(
    r"^CREATE (KEYSPACE|TABLE) IF NOT EXISTS ([a-z0-9_]+)(?:\.([a-z0-9_]+))?", re.IGNORECASE
)
_ADDS = re.compile(r"^ALTER TABLE ([a-z0-9_]+)\.([a-z0-9_]+) ADD ([a-z0-9_]+) ", re.IGNORECASE)


def _exists(metadata: Any, statement: str) -> bool:
    """Whether what a schema statement creates (a keyspace, a table, a column) exists already."""
    created = _CREATES.match(statement)
    if created:
        kind, name, table = created.groups()
        existing = metadata.keyspaces.get(name)
        return existing is not None and (kind.upper() == "KEYSPACE" or table in existing.tables)
    added = _ADDS.match(statement)
    if added:
        name, table, column = added.groups()
        existing = metadata.keyspaces.get(name)
        found = existing.tables.get(table) if existing is not None else None
        return found is not None and column in found.columns
    return False


def apply_schema(session: Session, schema_dir: Path, keyspace: str, replication_factor: int) -> None:
    """Create the keyspace and tables that are missing. What exists is left alone without asking the
    server, so an application role needs no CREATE permission once an admin has applied the schema."""
    metadata = session.cluster.metadata
    for statement in schema_statements(schema_dir, keyspace, replication_factor):
        if _exists(metadata, statement):
            continue
        try:
            session.execute(statement, timeout=60)
        except InvalidRequest as exc:  # the column exists (the driver's metadata was behind)
            if not (_ADDS.match(statement) and "exist" in str(exc)):
                raise
        except Unauthorized as exc:
            raise ConfigError(
                f"the Cassandra role may not create the schema ({exc}); "
                "apply it once with an admin role, then grant the application role access to the keyspace"
            ) from None


def drop_keyspace(session: Session, keyspace: str) -> None:
    session.execute(f"DROP KEYSPACE IF EXISTS {check_identifier(keyspace)}", timeout=60)


def as_asyncio(response: ResponseFuture) -> asyncio.Future[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    # The driver calls back on its own I/O thread: hand the outcome to the event loop.
    def resolve(result: Any) -> None:
        if not future.done():
            future.set_result(result)

    def reject(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def done(result: Any) -> None:
        loop.call_soon_threadsafe(resolve, result)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(reject, exc)

    response.add_callbacks(done, failed)
    return future


async def execute(session: Session, statement: Statement, params: Sequence[Any] | None = None) -> Any:
    """``statement``'s first page of results, or `OperationTimedOut` after the session's default
    timeout. The timeout is kept by the event loop, not the driver: the driver's timer makes each
    request a reference cycle (the request, its timer, the timer's callback bound to the request)
    that only the cyclic collector frees, holding every bound row of the request until then. At
    thousands of rows a second that meant a young-generation collection of ~50,000 objects every
    second or so, 30-100 ms each: the tail of the fraud latency. A request whose answer comes
    after the timeout is ignored (the caller retries it: every write here is an idempotent upsert)."""
    timeout = session.default_timeout
    answer = as_asyncio(session.execute_async(statement, params, timeout=None))
    try:
        return await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        raise OperationTimedOut(f"no answer within {timeout} s") from None


async def execute_retrying(
    session: Session, statement: Statement, what: str, params: Sequence[Any] | None = None, *,
    max_attempts: int = 0, on_retry: Callable[[BaseException], None] = lambda exc: None,
    transient: tuple[type[Exception], ...] = _TRANSIENT,
) -> Any:  # fmt: skip
    """``statement``'s result, retrying ``transient`` errors (a write's, by default; a read passes
    `READ_TRANSIENT`) with capped backoff (0.2 s doubling to 5 s); ``max_attempts`` 0 retries for
    ever (the caller's batch waits while Cassandra is down), else the last error is raised.
    ``what`` is logged at the first failure and every tenth."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await execute(session, statement, params)
        except transient as exc:
            if attempt == max_attempts:
                raise
            on_retry(exc)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s (attempt %d): %s", what, attempt, exc)
            await asyncio.sleep(min(0.1 * 2 ** min(attempt, 6), 5.0))


def prepare_retrying(session: Session, cql: str, *, attempts: int = 6) -> PreparedStatement:
    """``cql`` prepared, retrying a timeout or a node that is away (0.5 s doubling): a worker
    prepares at its first write or read, which on a busy node can take longer than the session's
    timeout; that must not end the worker. Blocks the caller (once per statement)."""
    for attempt in range(1, attempts + 1):
        try:
            return session.prepare(cql)
        except (OperationTimedOut, NoHostAvailable) as exc:
            if attempt == attempts:
                raise
            log.warning("preparing a statement (attempt %d): %s", attempt, exc)
            time.sleep(0.25 * 2**attempt)
    raise AssertionError("attempts must be at least 1")


def read_smoke_events(session: Session, keyspace: str, version: str, run_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        f"SELECT * FROM {check_identifier(keyspace)}.smoke_events "
        "WHERE pipeline_version = %s AND run_id = %s",
        (version, run_id),
    )
    return [dict(row._asdict()) for row in rows]
