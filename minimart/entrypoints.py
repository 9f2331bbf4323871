"""What the functions' entrypoints share: CloudEvent -> step -> publish, and operational routes.

KafkaSource semantics drive the answers: 2xx only when the state change and the published
next events are durable; malformed input is 400 (not retried: dead-lettered with the reason);
anything transient raises, which answers 500 and is retried.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import unquote, urljoin

import flask
import requests
from cloudevents.http import CloudEvent
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from minimart.bootstrap import STEPS, Container, bootstrap
from minimart.catalog import InvalidEvent, parse
from minimart.domain.saga import Contradiction
from minimart.handlers import redrive
from minimart.observability import tracing
from minimart.problems import problem

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0

EVENTS_HANDLED = Counter(
    "minimart_events_handled_total",
    "CloudEvents handled by a saga function, by type and outcome",
    ["service", "type", "outcome"],
)
STEP_SECONDS = Histogram(
    "minimart_step_duration_seconds",
    "Time to handle one CloudEvent: the state change and the publish of its next events",
    ["service", "type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_REFUSED = Counter(
    "minimart_events_refused_total",
    "CloudEvents refused because they contradict the state their step stores (400: poison)",
    ["service", "type", "rule"],
)


# Where a function's app keeps its container (Flask's slot for extensions' state).
_EXTENSION = "minimart"
_building = threading.Lock()


def use_container(app: flask.Flask, container: Container) -> None:
    """Serve ``app`` with ``container`` (tests hand in one built on fakes)."""
    app.extensions[_EXTENSION] = container


def container_of(app: flask.Flask) -> Container:
    """The app's container: the one handed in, else the real one, built on first use (which
    sets tracing up before any client exists)."""
    found: Container | None = app.extensions.get(_EXTENSION)
    if found is None:
        with _building:
            found = app.extensions.get(_EXTENSION)
            if found is None:
                found = app.extensions[_EXTENSION] = bootstrap()
    return found


def header_text(value: str) -> str:
    """A CloudEvents attribute as an HTTP header carries it, decoded (HTTP binding 3.1.3.2):
    percent-decoded (UTF-8); a value in double quotes, as older senders wrote them, unquoted."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return unquote(value, errors="replace") if "%" in value else value


def decode_binary_attributes(cloud_event: CloudEvent, content_type: str | None) -> None:
    """Percent-decode the attributes of a binary-mode event in place.

    cloudevents 1.12's ``from_http`` (what functions-framework builds the event with) keeps
    ``ce-source: /a%20b`` as ``/a%20b``; a conformant sender (the dispatcher, Knative)
    encodes space, ``"``, ``%`` and non-ASCII. Structured mode carries the attributes in JSON,
    which is not encoded.
    """
    if (content_type or "").startswith("application/cloudevents"):
        return
    for name, value in list(cloud_event.get_attributes().items()):
        if isinstance(value, str) and ("%" in value or value[:1] == '"'):
            cloud_event[name] = header_text(value)


def handle_cloud_event(service: str, cloud_event: CloudEvent) -> None:
    c = container_of(flask.current_app)
    decode_binary_attributes(cloud_event, flask.request.mimetype)
    attributes = cloud_event.get_attributes()
    # transport, then extension
    parent = tracing.extract(tracing.transport_headers(flask.request.headers), attributes)
    event_type = str(attributes.get("type", ""))
    with tracing.server_span(
        f"{service} {event_type.removeprefix('com.minimart.')}",
        parent,
        {
            tracing.SERVICE: service,
            tracing.EVENT_ID: str(attributes.get("id", "")),
            tracing.EVENT_TYPE: event_type,
            tracing.EVENT_SOURCE: str(attributes.get("source", "")),
            tracing.ORDER_ID: str(attributes.get("subject") or ""),
        },
    ) as span:
        outcome = "error"
        try:
            _handle(service, cloud_event, c)
            outcome = "ok"
        except HTTPException:
            outcome = "invalid"
            raise
        finally:
            span.set_attribute(tracing.OUTCOME, outcome)


def _handle(service: str, cloud_event: CloudEvent, c: Container) -> None:
    step = STEPS[service]
    started = time.perf_counter()
    try:
        event = parse(cloud_event)
        if event.type not in step.accepts:
            raise InvalidEvent(f"{service} does not handle {event.type.short} events")
    except InvalidEvent as exc:
        EVENTS_HANDLED.labels(service, "invalid", "invalid").inc()
        log.warning("rejecting event %s: %s", cloud_event.get("id"), exc)
        # The body becomes the dead letter's knativeerrordata: plain JSON, not an HTML page.
        flask.abort(problem(400, "invalid-event", "Invalid event", str(exc)))
    tracing.annotate({tracing.ORDER_ID: event.order_id})
    try:
        emitted = step.run(event, c)
        c.publisher.publish(emitted, source=service)
    except Contradiction as exc:  # rolled back: nothing changed; dead-lettered with the reason
        EVENTS_HANDLED.labels(service, event.type.short, "refused").inc()
        EVENTS_REFUSED.labels(service, event.type.short, exc.rule).inc()
        log.warning("refusing event %s: %s", event.id, exc)
        flask.abort(
            problem(400, "contradiction", "Event contradicts the stored state", str(exc),
                    rule=exc.rule)
        )  # fmt: skip
    except Exception:
        EVENTS_HANDLED.labels(service, event.type.short, "error").inc()
        raise
    tracing.annotate({"minimart.emitted": [e.type.short for e in emitted]})
    EVENTS_HANDLED.labels(service, event.type.short, "ok").inc()
    STEP_SECONDS.labels(service, event.type.short).observe(time.perf_counter() - started)


def handle_dead_letter(cloud_event: CloudEvent) -> None:
    """The re-drive function: a dead letter back to its topic when its failure was transient
    and its sink is healthy again (``minimart.handlers.redrive``); 503 while the sink is down,
    so the re-drive KafkaSource retries later; a poison letter is left where it is."""
    c = container_of(flask.current_app)
    decode_binary_attributes(cloud_event, flask.request.mimetype)
    if "ce-specversion" in flask.request.headers:  # binary mode: the body is the data as it was
        data = flask.request.get_data()
    else:
        body = cloud_event.get_data()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    letter = redrive.DeadLetter({k: str(v) for k, v in cloud_event.get_attributes().items()}, data)
    decision = redrive.decide(
        letter, own_host=flask.request.host, sink_healthy=lambda: _healthy(letter.destination)
    )
    level = logging.WARNING if decision.verdict is redrive.Verdict.KEEP else logging.INFO
    log.log(level, "dead letter %s (HTTP %s from %s): %s, %s", cloud_event.get("id"),
            letter.code, letter.destination, decision.verdict, decision.reason)  # fmt: skip
    EVENTS_HANDLED.labels("redrive", "deadletter", decision.verdict.value).inc()
    if decision.verdict is redrive.Verdict.WAIT:
        flask.abort(problem(503, "sink-down", "Sink not healthy yet", decision.reason))
    if decision.verdict is redrive.Verdict.REDRIVE and letter.topic is not None:
        record = redrive.redriven(letter, letter.topic)
        c.records.publish_record(record.topic, record.key, record.value, record.headers)


def _healthy(sink_url: str) -> bool:
    try:
        return requests.get(urljoin(sink_url, "/healthz"), timeout=HEALTH_TIMEOUT_S).ok
    except requests.RequestException:
        return False


def install_operational_routes(app: flask.Flask, service: str) -> None:
    """GET /healthz (ready: clients built, schema migrated) and GET /metrics."""

    def healthz() -> Any:
        try:
            container_of(app).warm_up(service)
        except Exception as exc:  # not ready yet: the probe retries
            log.warning("%s not ready: %s", service, exc)
            return flask.jsonify(status="starting", error=str(exc)), 503
        return flask.jsonify(status="ok", service=service)

    def metrics() -> Any:
        return flask.Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    def http_error(exc: HTTPException) -> Any:
        """Flask's own errors (no route, wrong method...) as problem+json, not HTML pages."""
        if exc.response is not None:
            return exc.response
        code = exc.code or 500
        response = problem(code, f"http-{code}", exc.name, exc.description or exc.name)
        for name, value in exc.get_headers():  # a 405's Allow (RFC 9110 15.5.6)
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    app.register_error_handler(HTTPException, http_error)
