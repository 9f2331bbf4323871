"""Which dead letters go back by themselves, and how a re-driven record looks
(minimart.handlers.redrive); the redrive function in-process, reading any letter and asking
only the sinks the manifests declare (minimart.entrypoints.handle_dead_letter)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import flask
import functions_framework
import pytest
from flask.testing import FlaskClient

from minimart.bootstrap import STEPS, bootstrap
from minimart.catalog import REDRIVES_EXTENSION, EventType
from minimart.entrypoints import use_container
from minimart.handlers.redrive import (
    MAX_REDRIVES,
    DeadLetter,
    DeclaredSinks,
    Verdict,
    decide,
    redriven,
    transient,
)
from minimart.settings import PROJECT_ROOT, Settings
from tests import tokens

SINK = "http://127.0.0.1:18084"
SINKS = DeclaredSinks({"inventory": SINK}, {"inventory": STEPS["inventory"].accepts})


@pytest.mark.parametrize(
    ("code", "expected"),
    [(None, True), ("500", True), ("503", True), ("408", True), ("429", True),
     ("", False), ("0", False), ("400", False), ("404", False), ("409", False),
     ("422", False), ("x", False), ("5000", False), ("٥٠٣", False), (" 503", False)],
)  # fmt: skip
def test_transient_failures_are_no_response_timeouts_throttling_and_5xx(
    code: str | None, expected: bool
) -> None:
    assert transient(code) is expected


def _letter(code: str | None = "503", *, redrives: str = "0", destination: str = SINK + "/",
            event_type: str = "com.minimart.order.created") -> DeadLetter:  # fmt: skip
    attributes = {"id": "e-1", "type": event_type, "knativeerrordest": destination,
                  REDRIVES_EXTENSION: redrives}  # fmt: skip
    if code is not None:
        attributes["knativeerrorcode"] = code
    return DeadLetter(attributes, b"{}")


def _decide(code: str | None = "503", *, healthy: bool = True, **letter: Any) -> Verdict:
    asked: list[str] = []

    def sink_healthy(name: str) -> bool:
        asked.append(name)
        return healthy

    decision = decide(_letter(code, **letter), sinks=SINKS, sink_healthy=sink_healthy)
    if decision.verdict is Verdict.KEEP:
        assert not asked, "a letter kept for a human needs no health check"
    else:
        assert asked == ["inventory"], "only the declared sink is asked"
    return decision.verdict


def test_a_transient_letter_goes_back_once_its_sink_is_healthy_and_waits_before() -> None:
    assert _decide(None, healthy=True) is Verdict.REDRIVE
    assert _decide("502", healthy=False) is Verdict.WAIT


def test_poison_and_unmarked_failures_are_never_redriven_even_with_a_healthy_sink() -> None:
    for code in ("400", "404", "422", "", "0", "abc"):
        assert _decide(code, healthy=True) is Verdict.KEEP


def test_a_letter_naming_no_declared_sink_is_kept_and_nothing_is_asked() -> None:
    for destination in ("http://evil.example:80/", "http://127.0.0.1:18085/", "file:///etc",
                        "", "http://127.0.0.1:18084.evil.example/", "not a url"):  # fmt: skip
        assert _decide(destination=destination) is Verdict.KEEP, destination
    # The same origin however it is spelt.
    assert _decide(destination="HTTP://127.0.0.1:18084/any/path?q=1") is Verdict.REDRIVE


def test_a_letter_its_sink_does_not_consume_is_kept() -> None:
    assert _decide(event_type=EventType.SHIPPING_PREPARED.value) is Verdict.KEEP
    assert _decide(event_type="dev.knative.kafka.event") is Verdict.KEEP  # not in the catalog


def test_redrives_are_bounded() -> None:
    assert _decide(redrives=str(MAX_REDRIVES - 1)) is Verdict.REDRIVE
    assert _decide(redrives=str(MAX_REDRIVES)) is Verdict.KEEP
    assert _decide(redrives="9" * 40) is Verdict.KEEP  # no huge int parsed
    assert _decide(redrives="-1") is Verdict.KEEP


def test_the_redrive_function_puts_the_event_back_keyed_by_its_order_and_counted() -> None:
    letter = DeadLetter(
        {"specversion": "1.0", "id": "e-1", "type": "com.minimart.payment.captured",
         "source": "/minimart/payment", "subject": "o-1", "datacontenttype": "application/json",
         "knativeerrordest": SINK, "knativeerrordata": "refused", REDRIVES_EXTENSION: "2"},
        b'{"orderId": "o-1"}',
    )  # fmt: skip
    assert letter.topic == "minimart.payment.captured"

    record = redriven(letter, "minimart.payment.captured")

    assert (record.topic, record.key, record.value) == (
        "minimart.payment.captured", b"o-1", b'{"orderId": "o-1"}',
    )  # fmt: skip
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_type": b"com.minimart.payment.captured",
        "ce_source": b"/minimart/payment",
        "ce_subject": b"o-1",
        f"ce_{REDRIVES_EXTENSION}": b"3",
        "content-type": b"application/json",
    }


# -- the function, in-process, against real HTTP servers standing for sinks ---------------------


class _Sink(http.server.ThreadingHTTPServer):
    """A sink on 127.0.0.1 answering GET /healthz with ``status`` (and a Location), counting
    every request it gets."""

    def __init__(self, status: int, location: str = "") -> None:
        self.status, self.location = status, location
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                self.send_response(server.status)
                if server.location:
                    self.send_header("Location", server.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def sinks() -> Iterator[list[_Sink]]:
    made: list[_Sink] = []
    yield made
    for sink in made:
        sink.shutdown()
        sink.server_close()


def _serve(made: list[_Sink], status: int, location: str = "") -> _Sink:
    sink = _Sink(status, location)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    made.append(sink)
    return sink


class _Records:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes | None]] = []

    def publish_record(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: Sequence[tuple[str, bytes]]) -> None:  # fmt: skip
        self.published.append((topic, key))


def _app(declared: str, records: _Records) -> flask.Flask:
    source = PROJECT_ROOT / "functions" / "redrive" / "main.py"
    app: flask.Flask = functions_framework.create_app(  # type: ignore[no-untyped-call]
        "handle", str(source), "http"
    )
    use_container(app, bootstrap(Settings(redrive_sinks=declared), tracing=False, records=records,
                                 verifier=tokens.verifier()))  # fmt: skip
    app.test_client_class = _SentByRedriveSource
    return app


class _SentByRedriveSource(FlaskClient):
    """A client that sends what redrive-source sends: its token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_AUTHORIZATION"] = tokens.bearer("redrive")


def _binary(code: str | None, destination: str) -> dict[str, str]:
    headers = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/minimart/order",
               "ce-type": EventType.ORDER_CREATED.value, "ce-subject": "o-1",
               "ce-knativeerrordest": destination, "Content-Type": "application/json"}  # fmt: skip
    if code is not None:
        headers["ce-knativeerrorcode"] = code
    return headers


def test_the_function_asks_the_declared_url_never_the_letters(sinks: list[_Sink]) -> None:
    declared, elsewhere = _serve(sinks, 200), _serve(sinks, 200)
    records = _Records()
    client = _app(f"inventory={declared.url}", records).test_client()

    # The letter names an origin nobody declared: kept, and nobody is called.
    kept = client.post("/", headers=_binary("503", elsewhere.url + "/x"), data=b"{}")
    assert (kept.status_code, kept.json["verdict"]) == (200, "keep")
    assert elsewhere.requests == [] and declared.requests == [] and records.published == []

    # The letter names the declared sink (any path): its declared /healthz is asked.
    sent = client.post("/", headers=_binary(None, declared.url + "/?next=evil"), data=b"{}")
    assert (sent.status_code, sent.json["verdict"]) == (200, "redrive")
    assert declared.requests == ["/healthz"]
    assert records.published == [("minimart.order.created", b"o-1")]


def test_a_redirect_is_not_followed_and_is_no_health(sinks: list[_Sink]) -> None:
    target = _serve(sinks, 200)
    redirecting = _serve(sinks, 302, location=target.url + "/healthz")
    records = _Records()
    client = _app(f"inventory={redirecting.url}", records).test_client()

    response = client.post("/", headers=_binary("503", redirecting.url), data=b"{}")

    assert response.status_code == 503  # wait: the sink is not healthy
    assert response.mimetype == "application/problem+json"
    assert redirecting.requests == ["/healthz"] and target.requests == []
    assert records.published == []


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0"}'),
        ({"Content-Type": "application/cloudevents+json"}, b"[" * 70_000),
        ({"Content-Type": "application/cloudevents+json"}, b'{"data_base64": "%%%"}'),
        ({"Content-Type": "application/json"}, b"\xff\xfe not even text"),
        ({}, b""),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "x", "source": "/s", "data": "\\ud800"}',
        ),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "x", "source": "/s", "data": '
            + b"[" * 900
            + b"]" * 900
            + b"}",
        ),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "\\udfff", "source": "/s"}',
        ),
    ],
    ids=[
        "no-id",
        "deep",
        "bad-base64",
        "not-a-cloudevent",
        "empty",
        "lone-surrogate-data",
        "deep-data",
        "lone-surrogate-attribute",
    ],
)
def test_a_letter_that_is_no_valid_cloudevent_is_kept_not_refused(
    headers: dict[str, str], body: bytes
) -> None:
    """A 4xx here would send it to the parked topic: the function takes every letter."""
    records = _Records()
    client = _app("inventory=http://127.0.0.1:1", records).test_client()

    response = client.post("/", headers=headers, data=body)

    assert (response.status_code, response.json["verdict"]) == (200, "keep")
    assert records.published == []
