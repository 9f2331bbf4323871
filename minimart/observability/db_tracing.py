"""PostgreSQL spans: one CLIENT span per unit of work (a pooled connection's checkout).

Why minimart's own rather than the OpenTelemetry psycopg instrumentation (a span per
statement): the units of work run in pipeline mode, where ``execute()`` of a write only queues
it, so a statement's span timed the queueing and not the database; and each such span cost
~150 µs of CPU (made, then exported), ~5 of them per event (docs/performance.md). A span from
``getconn`` to ``putconn`` of ``psycopg_pool.ConnectionPool`` covers the round trips and the
commit of the whole transaction; it lists the statements it ran (``db.statement``, joined)
and counts them (``db.operation.batch.size``).

Only inside a trace: a checkout outside any span (migrations, the outbox relay's polling) is
no root of its own (the sampler keeps roots where work enters), so nothing is recorded.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from opentelemetry.trace import Span, SpanKind, Tracer
from psycopg_pool import ConnectionPool

STATEMENT_MAX_CHARS = 4096

_lock = threading.Lock()
_installed = False
# id(connection) -> (its unit of work's span, the statements run so far)
_open: dict[int, tuple[Span, list[str]]] = {}


def _text(query: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    return type(query).__name__  # a composed query: its text needs the connection


def instrument(tracer: Tracer) -> None:
    """Patch ``ConnectionPool.getconn/putconn`` and ``Cursor.execute/executemany`` once."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    getconn, putconn = ConnectionPool.getconn, ConnectionPool.putconn
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def traced_getconn(self: ConnectionPool, timeout: float | None = None) -> Any:
        conn = getconn(self, timeout)
        info = conn.info
        span = tracer.start_span(
            info.dbname,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.name": info.dbname,
                "db.user": info.user,
                "server.address": info.host,
                "server.port": info.port,
            },
        )
        if span.is_recording():
            _open[id(conn)] = (span, [])
        return conn

    def traced_putconn(self: ConnectionPool, conn: Any) -> None:
        entry = _open.pop(id(conn), None)
        if entry is not None:
            span, statements = entry
            span.set_attribute("db.statement", "; ".join(statements)[:STATEMENT_MAX_CHARS])
            span.set_attribute("db.operation.batch.size", len(statements))
            span.end()
        putconn(self, conn)

    def traced_execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        entry = _open.get(id(self.connection))
        if entry is not None:
            entry[1].append(_text(query))
        return execute(self, query, *args, **kwargs)

    def traced_executemany(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        entry = _open.get(id(self.connection))
        if entry is not None:
            entry[1].append(_text(query))
        return executemany(self, query, *args, **kwargs)

    ConnectionPool.getconn = traced_getconn  # type: ignore[method-assign, assignment]
    ConnectionPool.putconn = traced_putconn  # type: ignore[method-assign, assignment]
    psycopg.Cursor.execute = traced_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = traced_executemany  # type: ignore[method-assign]
