"""Bounded input at the HTTP edge of every function, before functions-framework reads a byte.

``install_bounds(app, service, edge)`` (one line in each ``functions/*/main.py``) adds up to
three guards (the re-drive function takes the first only: it reads every letter itself):

- **Body size** (a WSGI middleware, outermost): a ``Content-Length`` above the edge's limit is
  answered 413 without reading the body; a body without one (chunked) is read up to the limit
  plus one byte, and 413 if it goes beyond, else handed on as a buffer with its length. So
  neither the view nor functions-framework's ``read_request`` (which calls ``get_data()``
  after an HTTP function's response) ever reads more than the limit. Flask's
  ``MAX_CONTENT_LENGTH`` is set to the same limit, for anything that reads the body another
  way. The limits live in ``Settings`` (``max_request_bytes``, ``max_event_bytes``).
- **JSON depth** (``before_request``): a body nested deeper than ``limits.MAX_JSON_DEPTH`` is
  a 400, found by a scan of the bytes (functions-framework parses a structured CloudEvent,
  and cloudevents the data of a binary one, before the handler runs; CPython's json raises
  RecursionError on deep input).
- **Unreadable CloudEvents** (CloudEvent functions): an exception raised while
  functions-framework turns the request into a CloudEvent (an integer of more than 4,300
  digits, bytes that are not UTF-8 in a structured event, a ``data_base64`` that is not
  base64...) is a 400 with the parser's reason, not a 500: it is told apart from a fault of
  the handler by reading the request again, on that error path only.

Each refusal is problem+json; a CloudEvent's 400 becomes its dead letter's knativeerrordata.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import flask
from cloudevents.exceptions import InvalidRequiredFields, MissingRequiredFields
from cloudevents.http import from_http
from functions_framework.event_conversion import background_event_to_cloud_event
from prometheus_client import Counter
from werkzeug.local import LocalProxy

from minimart.entrypoints import container_of
from minimart.limits import (
    DEAD_LETTER_MARGIN_BYTES,
    KAFKA_MAX_RECORD_BYTES,
    MAX_JSON_DEPTH,
    clip,
    json_depth_exceeds,
)
from minimart.problems import problem
from minimart.settings import Settings

log = logging.getLogger(__name__)

REFUSED = Counter(
    "minimart_requests_refused_total",
    "Requests refused at a function's edge, before the handler ran",
    ["service", "reason"],
)

_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Edge:
    """What a function takes in: its body limit, and how it names a bad body."""

    max_bytes: Callable[[Settings], int]
    json_depth: bool  # refuse a body nested deeper than MAX_JSON_DEPTH
    cloud_events: bool  # a CloudEvent function: what functions-framework cannot read is a 400
    kind: str = "invalid-event"  # the problem type of a 400
    title: str = "Invalid event"


API = Edge(lambda s: s.max_request_bytes, True, False, "unsupported-json", "Unsupported JSON")
EVENTS = Edge(lambda s: s.max_event_bytes, True, True)
# The re-drive function reads every letter itself and refuses none (its own reader copes with
# any JSON): only its body is bounded, by what a record of the dead-letter topic can hold.
DEAD_LETTERS = Edge(lambda s: KAFKA_MAX_RECORD_BYTES + DEAD_LETTER_MARGIN_BYTES, False, False)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def install_bounds(app: flask.Flask, service: str, edge: Edge) -> None:
    """Bound what ``app`` (a function's app, while its module runs) reads and parses."""
    if isinstance(app, LocalProxy):  # flask.current_app: the middleware keeps the app itself
        app = app._get_current_object()
    app.wsgi_app = _BoundedBody(app, app.wsgi_app, service, edge)  # type: ignore[method-assign]

    def refuse_deep_json() -> flask.Response | None:
        raw = flask.request.get_data()
        if not json_depth_exceeds(raw, MAX_JSON_DEPTH):
            return None
        return _refuse(service, "too-deep", edge, f"the body nests deeper than {MAX_JSON_DEPTH}")

    if edge.json_depth:
        app.before_request(refuse_deep_json)
    if edge.cloud_events:

        def unreadable(exc: Exception) -> flask.Response:
            request = flask.request
            reason = why_unreadable(request) if request.endpoint == "cloudevent" else None
            if reason is None:
                raise exc  # the handler's own fault: 500, retried
            return _refuse(service, "unreadable", edge, f"not a readable CloudEvent: {reason}")

        app.register_error_handler(Exception, unreadable)


def why_unreadable(request: flask.Request) -> str | None:
    """Why functions-framework cannot turn ``request`` into a CloudEvent (it tries the
    CloudEvents binding, then a legacy background event), or None when it can."""
    try:
        from_http(request.headers, request.get_data())  # type: ignore[arg-type]
    except (MissingRequiredFields, InvalidRequiredFields):
        try:
            background_event_to_cloud_event(request)  # type: ignore[no-untyped-call]
        except Exception as exc:
            return _describe(exc)
    except Exception as exc:
        return _describe(exc)
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def _refuse(service: str, reason: str, edge: Edge, detail: str) -> flask.Response:
    REFUSED.labels(service, reason).inc()
    log.warning("%s refused a request (%s): %s", service, reason, clip(detail))
    return problem(400, edge.kind, edge.title, clip(detail))


class _BoundedBody:
    """The WSGI middleware of the body limit (see the module's docstring)."""

    def __init__(self, app: flask.Flask, wsgi_app: WsgiApp, service: str, edge: Edge) -> None:
        self._app = app
        self._wsgi_app = wsgi_app
        self._service = service
        self._edge = edge

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        limit = self._edge.max_bytes(container_of(self._app).settings)
        if self._app.config.get("MAX_CONTENT_LENGTH") != limit:
            self._app.config["MAX_CONTENT_LENGTH"] = limit
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return self._answer(environ, start_response, 400, "bad Content-Length")
            if length > limit:
                return self._too_large(environ, start_response, limit)
        elif "wsgi.input_terminated" in environ:  # no length (chunked): read to the limit
            body = read_at_most(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                return self._too_large(environ, start_response, limit)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self._wsgi_app(environ, start_response)

    def _too_large(
        self, environ: dict[str, Any], start_response: StartResponse, limit: int
    ) -> Iterable[bytes]:
        REFUSED.labels(self._service, "too-large").inc()
        log.warning("%s refused a body of more than %d bytes", self._service, limit)
        response = problem(413, "too-large", "Content Too Large", f"at most {limit} bytes")
        return response(environ, start_response)

    def _answer(
        self, environ: dict[str, Any], start_response: StartResponse, status: int, detail: str
    ) -> Iterable[bytes]:
        REFUSED.labels(self._service, "bad-request").inc()
        return problem(status, "bad-request", "Bad Request", detail)(environ, start_response)


def read_at_most(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream`` (fewer only at its end), read in bounded chunks."""
    chunks: list[bytes] = []
    total = 0
    while total < size:
        chunk = stream.read(min(_READ_CHUNK, size - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
