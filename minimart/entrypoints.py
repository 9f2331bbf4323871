"""What the functions' entrypoints share: CloudEvent -> step -> publish, and operational routes.

KafkaSource semantics drive the answers: 2xx only when the state change and the published
next events are durable; malformed input is 400 (not retried: dead-lettered with the reason);
anything transient raises, which answers 500 and is retried.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urljoin

import flask
import requests
from cloudevents.http import CloudEvent
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from minimart import binding, identity
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


def decode_binary_attributes(cloud_event: CloudEvent, content_type: str | None) -> None:
    """Percent-decode the attributes of a binary-mode event in place.

    cloudevents 1.12's ``from_http`` (what functions-framework builds the event with) keeps
    ``ce-source: /a%20b`` as ``/a%20b``; a conformant sender (the dispatcher, Knative)
    encodes space, ``"``, ``%`` and non-ASCII. Structured mode carries the attributes in JSON,
    which is not encoded.
    """
    if (content_type or "").startswith(binding.STRUCTURED_CONTENT_TYPE):
        return
    for name, value in list(cloud_event.get_attributes().items()):
        if isinstance(value, str) and ("%" in value or value[:1] == '"'):
            cloud_event[name] = binding.header_text(value)


def verify_sender(service: str, c: Container) -> None:
    """Refuse a delivery whose sender is not proven (401) or not allowed (403), as
    problem+json: the KafkaSource dead-letters either at once (minimart/identity.py)."""
    try:
        c.verifier.verify(service, flask.request.headers.get("Authorization"))
    except identity.Refused as refused:
        EVENTS_HANDLED.labels(service, "refused", refused.kind).inc()
        log.warning("refusing a delivery to %s: %s", service, refused.detail)
        response = problem(refused.status, refused.kind, "Sender refused", refused.detail)
        response.headers["WWW-Authenticate"] = identity.www_authenticate(refused)
        flask.abort(response)


def handle_cloud_event(service: str, cloud_event: CloudEvent) -> None:
    c = container_of(flask.current_app)
    verify_sender(service, c)
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
            tracing.ORDER_ID: binding.order_id_of(attributes, None) or "",
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
        if flask.request.mimetype.startswith(binding.STRUCTURED_CONTENT_TYPE):
            broken = binding.structured_problem(flask.request.get_data())
            if broken is not None:
                raise InvalidEvent(broken)
        event = parse(cloud_event, flask.request.get_data())
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


def handle_dead_letter(request: flask.Request) -> Any:
    """The re-drive function (an HTTP function: it reads every letter itself, a letter that
    is no valid CloudEvent too, and never refuses one, so nothing it reads is dead-lettered
    again): a dead letter back to its topic when its failure was transient and its declared
    sink is healthy again (``minimart.handlers.redrive``); 503 while the sink is down, so the
    re-drive KafkaSource retries later; anything else is kept where it is, for a human."""
    c = container_of(flask.current_app)
    verify_sender("redrive", c)
    event = binding.from_http(request.headers.items(), request.get_data())
    letter = redrive.DeadLetter(event.attributes, event.data)
    if not event.readable:
        decision = redrive.Decision(redrive.Verdict.KEEP, "not a CloudEvent")
    else:
        sinks = c.redrive_sinks
        decision = redrive.decide(
            letter, sinks=sinks, sink_healthy=lambda name: _healthy(sinks.urls[name])
        )
    level = logging.WARNING if decision.verdict is redrive.Verdict.KEEP else logging.INFO
    log.log(level, "dead letter %s (HTTP %s from %s): %s, %s", letter.attributes.get("id"),
            letter.code, letter.destination, decision.verdict, decision.reason)  # fmt: skip
    EVENTS_HANDLED.labels("redrive", "deadletter", decision.verdict.value).inc()
    if decision.verdict is redrive.Verdict.WAIT:
        return problem(503, "sink-down", "Sink not healthy yet", decision.reason)
    if decision.verdict is redrive.Verdict.REDRIVE and letter.topic is not None:
        record = redrive.redriven(letter, letter.topic)
        c.records.publish_record(record.topic, record.key, record.value, record.headers)
    return flask.jsonify(verdict=decision.verdict.value, reason=decision.reason)


def _healthy(sink_url: str) -> bool:
    """Whether a declared sink answers its readiness probe with a 2xx (no redirect followed:
    a 3xx is not healthy)."""
    try:
        response = requests.get(
            urljoin(sink_url, "/healthz"), timeout=HEALTH_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException:
        return False
    return 200 <= response.status_code < 300


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
