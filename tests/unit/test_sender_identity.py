"""Sender identity (minimart/identity.py): a forged delivery is refused and changes nothing.

Every saga event type is POSTed straight to each function that handles it, as a process that
is no part of minimart would: with no token, a token for another function, an expired one,
one of a KafkaSource the manifests do not declare for that function (signed by the issuer's
key), and one signed by a key the issuer does not have. Each is refused (401: not proven;
403: proven, not allowed), as problem+json, and no store or publisher sees anything. The
functions' other tests (test_functions.py) send what their KafkaSource sends and are served.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import jwt
import pytest

from minimart import identity
from minimart.binding import KafkaRecord, OutgoingEvent
from minimart.bootstrap import STEPS, Container
from minimart.catalog import EventType
from minimart.domain.rules import label_id, payment_id
from minimart.entrypoints import use_container
from minimart.local.delivery import Deliverer, Outcome
from minimart.manifests import Delivery, KafkaSourceSpec
from tests import tokens
from tests.unit import test_functions
from tests.unit.test_functions import Fakes, create_app, create_event, new_id, order_facts, post

# The in-process functions on fakes of test_functions.py (the fixtures, for this module too).
apps, container, fakes = test_functions.apps, test_functions.container, test_functions.fakes

# Every (function, event type) a KafkaSource delivers.
DELIVERED = sorted((name, t) for name, step in STEPS.items() for t in step.accepts)


def forged_data(order_id: str) -> dict[str, Any]:
    return {
        **order_facts(order_id),
        "paymentId": payment_id(order_id),
        "labelId": label_id(order_id),
        "reason": "forged",
        "amountCents": 4_999,
    }


def another_function(name: str) -> str:
    return next(other for other in STEPS if other != name)


def undeclared_source(name: str) -> str:
    """The subject of a KafkaSource the manifests declare, but for another function."""
    declared = set(tokens.senders()[name])
    return next(s for f, subjects in tokens.senders().items() for s in subjects
                if f != name and s not in declared)  # fmt: skip


FORGERIES: dict[str, tuple[int, Callable[[str], str | None]]] = {
    "no token": (401, lambda name: None),
    "not a bearer token": (401, lambda name: "Basic dXNlcjpwYXNz"),
    "garbage": (401, lambda name: "Bearer not.a.jwt"),
    "token for another function": (
        403,
        lambda name: tokens.bearer(name, audience=identity.audience_of(another_function(name))),
    ),
    "expired token": (
        401,
        lambda name: tokens.bearer(name, lifetime_s=60, issued_at=time.time() - 3600),
    ),
    "source not declared for it": (
        403,
        lambda name: tokens.bearer(name, subject=undeclared_source(name)),
    ),
    "signed by another key": (401, lambda name: tokens.bearer(name, key=tokens.stranger_key())),
    "another issuer": (
        401,
        lambda name: tokens.bearer(
            name, key=identity.SigningKey(tokens.signing_key().key, "https://elsewhere")
        ),
    ),
}


def stored(fakes: Fakes) -> str:
    """Everything the fakes hold, committed."""
    return repr(
        (
            fakes.inventory.committed,
            fakes.payments.committed,
            fakes.orders.committed,
            vars(fakes.shipments),
            vars(fakes.notifications),
        )
    )


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
@pytest.mark.parametrize(("name", "event_type"), DELIVERED, ids=lambda v: str(v))
def test_a_forged_delivery_is_refused_and_changes_nothing(
    apps: dict[str, flask.Flask],
    container: Container,
    fakes: Fakes,
    name: str,
    event_type: EventType,
    forgery: str,
) -> None:
    status, authorization = FORGERIES[forgery]
    client = apps[name].test_client()
    header = authorization(name)
    if header is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = header
    before = stored(fakes)

    response = post(client, create_event(event_type, forged_data(new_id())))

    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer error=")
    assert fakes.publisher.published == []
    assert stored(fakes) == before


@pytest.mark.parametrize("forgery", ["no token", "source not declared for it", "expired token"])
def test_a_forged_dead_letter_is_not_redriven(
    container: Container, fakes: Fakes, forgery: str
) -> None:
    """The redrive function publishes what it reads: a forged letter would be a way into any
    saga topic."""
    records: list[Any] = []

    class Records:
        def publish_record(self, *args: Any) -> None:
            records.append(args)

    app = create_app("redrive", "http")
    container.__dict__["records"] = Records()
    use_container(app, container)
    status, authorization = FORGERIES[forgery]
    headers = {"ce-specversion": "1.0", "ce-id": new_id(), "ce-source": "/minimart/order",
               "ce-type": EventType.ORDER_CREATED.value, "ce-knativeerrorcode": "500",
               "ce-knativeerrordest": "http://inventory/",
               "Content-Type": "application/json"}  # fmt: skip
    header = authorization("redrive")
    if header is not None:
        headers["Authorization"] = header

    response = app.test_client().post("/", headers=headers, data=json.dumps(order_facts(new_id())))

    assert response.status_code == status
    assert records == []


# -- the verifier itself ----------------------------------------------------------------------


class CountingKeys:
    """The test issuer's keys, counting the look-ups (each precedes an RSA verification)."""

    def __init__(self) -> None:
        self.lookups = 0
        self._key = tokens.signing_key().key.public_key()

    def warm_up(self) -> None:
        pass

    def key(self, kid: str | None) -> Any:
        self.lookups += 1
        return self._key


def verifier(keys: Any, clock: Callable[[], float] = time.time) -> identity.Verifier:
    policy = identity.Policy(tokens.ISSUER, {"payment": frozenset(tokens.senders()["payment"])})
    return identity.Verifier(keys, policy, clock=clock)


def test_a_verified_token_is_cached_until_it_expires() -> None:
    now = [time.time()]
    keys = CountingKeys()
    check = verifier(keys, clock=lambda: now[0])
    header = tokens.bearer("payment", lifetime_s=60, issued_at=now[0])

    for _ in range(3):
        check.verify("payment", header)
    assert keys.lookups == 1  # verified once; then a dict lookup

    now[0] += 60 + identity.LEEWAY_S + 1
    with pytest.raises(identity.Refused) as refused:
        check.verify("payment", header)
    assert refused.value.status == 401


def test_a_cached_token_is_not_taken_for_another_function() -> None:
    keys = CountingKeys()
    check = verifier(keys)
    header = tokens.bearer("payment")
    check.verify("payment", header)

    with pytest.raises(identity.Refused) as refused:
        check.verify("shipping", header)
    assert refused.value.status == 403


def test_an_unknown_key_id_is_looked_up_again_at_most_every_few_seconds() -> None:
    fetched: list[float] = []
    now = [1000.0]
    public = tokens.signing_key().key.public_key()

    def fetch() -> dict[str, Any]:
        fetched.append(now[0])
        return identity.jwks_of([public])

    keys = identity.JwksKeys(fetch, clock=lambda: now[0])
    keys.warm_up()
    assert keys.key(tokens.signing_key().kid) is not None
    for _ in range(3):
        with pytest.raises(KeyError):
            keys.key("rotated")
    now[0] += identity.KEYS_REFRESH_MIN_S
    with pytest.raises(KeyError):
        keys.key("rotated")
    assert fetched == [1000.0, 1000.0 + identity.KEYS_REFRESH_MIN_S]


def test_the_minter_hands_out_one_token_until_shortly_before_it_expires() -> None:
    now = [1_000_000.0]
    minter = identity.TokenMinter(
        tokens.signing_key(), "sub", "aud", lifetime_s=600, refresh_before_s=120,
        clock=lambda: now[0],
    )  # fmt: skip
    first = minter()
    now[0] += 479
    assert minter() is first
    now[0] += 1
    renewed = minter()
    assert renewed != first
    check = identity.Verifier(
        CountingKeys(), identity.Policy(tokens.ISSUER, {"x": frozenset({"sub"})})
    )
    with pytest.raises(identity.Refused):  # minted for "aud", not for function x
        check.verify("x", renewed)


def test_the_source_service_accounts_are_named_as_knative_names_them() -> None:
    assert identity.source_subject("payment-source") == (
        "system:serviceaccount:minimart:payment-source-oidc-sources.knative.dev-kafkasource"
    )
    with pytest.raises(ValueError):
        identity.source_account("x" * 40)


# -- the dispatcher sends its token, and a refusal is poison ------------------------------------


class _Sink(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.authorizations: list[str | None] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.authorizations.append(self.headers.get("Authorization"))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def sink_of() -> Iterator[Callable[[int], _Sink]]:
    made: list[_Sink] = []

    def make(status: int) -> _Sink:
        sink = _Sink(status)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.shutdown()
        sink.server_close()


class DeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[str, dict[str, str]]] = []

    def publish(self, topic: str, event: OutgoingEvent, extensions: Any) -> None:
        self.letters.append((topic, dict(extensions)))


@pytest.mark.parametrize("status", [200, 401, 403])
def test_the_dispatcher_sends_its_token_and_a_refusal_is_dead_lettered_at_once(
    sink_of: Callable[[int], _Sink], status: int
) -> None:
    sink, letters = sink_of(status), DeadLetters()
    spec = KafkaSourceSpec("payment-source", "g", ("t",), "payment", "earliest", "ordered",
                           Delivery(retry=3, backoff_delay_s=0.01, dead_letter_topic="dlq"),
                           sink_audience=identity.audience_of("payment"))  # fmt: skip
    minter = identity.TokenMinter(tokens.signing_key(), tokens.source_of("payment"),
                                  identity.audience_of("payment"))  # fmt: skip
    deliverer = Deliverer(spec, f"http://127.0.0.1:{sink.server_address[1]}/", letters,
                          authorization=minter)  # fmt: skip
    record = KafkaRecord("t", 0, 0, 0, b"k", b"{}", [("ce_specversion", b"1.0"),
                         ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"x")])  # fmt: skip
    conn = deliverer.new_connection()

    result = deliverer.deliver(record, conn, threading.Event())
    conn.close()

    assert sink.authorizations == [minter()]  # one attempt: a 401/403 is never retried
    tokens.verifier().verify("payment", sink.authorizations[0])
    if status == 200:
        assert result.outcome is Outcome.DELIVERED and letters.letters == []
    else:
        assert result.outcome is Outcome.DEAD_LETTERED
        assert letters.letters == [("dlq", {"knativeerrordest": deliverer.sink_url,
                                            "knativeerrorcode": str(status),
                                            "knativeerrordata": ""})]  # fmt: skip


def test_the_cache_stays_bounded_and_keeps_serving() -> None:
    now = [time.time()]
    keys = CountingKeys()
    policy = identity.Policy(tokens.ISSUER, {"payment": frozenset(tokens.senders()["payment"])})
    check = identity.Verifier(keys, policy, clock=lambda: now[0], max_cached=3)
    headers = [tokens.bearer("payment", lifetime_s=10 + i, issued_at=now[0]) for i in range(5)]

    for header in headers:
        check.verify("payment", header)
    now[0] += 10 + identity.LEEWAY_S  # the first has expired: evicted, not the others
    check.verify("payment", headers[4])
    check.verify("payment", headers[3])

    assert keys.lookups == 5


def test_a_token_shaped_as_the_api_server_issues_it_is_taken() -> None:
    """A TokenRequest token (what Knative's KafkaSource sends in a cluster): ``aud`` a list,
    a ``jti``, and the ``kubernetes.io`` claims naming the namespace and ServiceAccount."""
    key, now = tokens.signing_key(), int(time.time())
    account = identity.source_account("payment-source")
    claims = {
        "aud": [identity.audience_of("payment")],
        "exp": now + 3600, "iat": now, "nbf": now, "iss": tokens.ISSUER,
        "jti": "5b1b3e52-6f4e-4d6c-9b1a-0c1f3f6d2a11",
        "kubernetes.io": {"namespace": "minimart",
                          "serviceaccount": {"name": account, "uid": "0f1e2d3c"}},
        "sub": identity.account_subject(account),
    }  # fmt: skip
    token = jwt.encode(claims, key.key, algorithm="RS256", headers={"kid": key.kid})

    tokens.verifier().verify("payment", identity.BEARER + token)
    with pytest.raises(identity.Refused):
        tokens.verifier().verify("shipping", identity.BEARER + token)
