"""Bounded input: every function refuses an oversized body before reading it, and answers
pathological JSON (deep, huge numbers, NUL, lone surrogates, beyond bigint) with a 4xx
problem+json, never a 5xx. In-process (functions-framework test clients on fakes)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import flask
import pytest
import yaml
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from minimart.bootstrap import Container
from minimart.catalog import SCHEMAS, Event, EventType, InvalidEvent, build, parse
from minimart.domain.orders import OrderLimits, parse_order_request
from minimart.limits import (
    BIGINT_MAX,
    DEAD_LETTER_MARGIN_BYTES,
    KAFKA_MAX_RECORD_BYTES,
    MAX_CUSTOMER_ID,
    MAX_JSON_DEPTH,
    MAX_LINE_QUANTITY,
    MAX_ORDER_LINES,
    MAX_REASON_CHARS,
    json_depth_exceeds,
    json_text_may_be_unsafe,
    unsafe_text,
)
from minimart.settings import PROJECT_ROOT, Settings, SettingsError
from tests import tokens
from tests.unit.test_functions import (
    SAGA_FUNCTIONS,
    Fakes,
    create_app,
    order_facts,
    sent_by_its_source,
    serve,
)

MB = 1024 * 1024
EVENT_FUNCTIONS = (*SAGA_FUNCTIONS, "redrive")


@pytest.fixture(scope="module")
def apps() -> dict[str, flask.Flask]:
    built = {name: create_app(name, "cloudevent") for name in SAGA_FUNCTIONS}
    built["order"] = create_app("order", "http")
    built["redrive"] = create_app("redrive", "http")
    return built


def fake_container(apps: dict[str, flask.Flask], settings: Settings) -> Container:
    return serve(apps, Fakes().container(settings))


@pytest.fixture
def container(apps: dict[str, flask.Flask]) -> Container:
    return fake_container(apps, Settings())


@pytest.fixture
def client(apps: dict[str, flask.Flask], container: Container) -> Callable[[str], FlaskClient]:
    return lambda name: sent_by_its_source(apps[name].test_client(), name)


def limit_of(name: str, settings: Settings) -> int:
    if name == "order":
        return settings.max_request_bytes
    if name == "redrive":
        return KAFKA_MAX_RECORD_BYTES + DEAD_LETTER_MARGIN_BYTES  # any record of its topic
    return settings.max_event_bytes


def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = json.loads(response.data)
    assert body["status"] == status
    assert body["detail"]
    return body


def ce_headers(event_type: str = EventType.ORDER_CREATED.value, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/test",
        "ce-id": str(uuid.uuid4()),
        "content-type": "application/json",
        **extra,
    }


def structured(data_json: bytes, event_type: str = EventType.ORDER_CREATED.value) -> bytes:
    envelope = {"specversion": "1.0", "type": event_type, "source": "/t", "id": str(uuid.uuid4())}
    return json.dumps(envelope)[:-1].encode() + b', "data": ' + data_json + b"}"


STRUCTURED = {"content-type": "application/cloudevents+json"}
ENVELOPE = b'{"specversion": "1.0", "type": "t", "source": "/s", "id": "1", '


def target(name: str) -> str:
    return "/orders" if name == "order" else "/"


# -- body size: 413 before the body is read ---------------------------------------------------


class CountingBody(io.RawIOBase):
    """A request body of ``size`` bytes that is never in memory; counts what was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = self.size - self.consumed
        n = left if n is None or n < 0 else min(n, left)
        self.consumed += n
        return b"[" * n

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def call_wsgi(app: flask.Flask, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """Call ``app`` as a WSGI server does, with ``environ`` over a POST's defaults."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured.update(status=status, headers=dict(headers))

    full = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_TYPE": "application/json",
        **environ,
    }
    body = b"".join(app(full, start_response))
    return captured["status"], captured["headers"], body


@pytest.mark.parametrize("name", [*EVENT_FUNCTIONS, "order"])
def test_a_100_mb_body_declared_by_content_length_is_refused_unread(
    apps: dict[str, flask.Flask], container: Container, name: str
) -> None:
    body = CountingBody(100 * MB)

    status, headers, answer = call_wsgi(
        apps[name],
        {"PATH_INFO": target(name), "CONTENT_LENGTH": str(100 * MB), "wsgi.input": body,
         "wsgi.input_terminated": True},
    )  # fmt: skip

    assert status.startswith("413 ")
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(answer)["detail"] == f"at most {limit_of(name, container.settings)} bytes"
    assert body.consumed == 0


@pytest.mark.parametrize("name", [*EVENT_FUNCTIONS, "order"])
def test_a_100_mb_chunked_body_is_read_no_further_than_the_limit(
    apps: dict[str, flask.Flask], container: Container, name: str
) -> None:
    body = CountingBody(100 * MB)  # no Content-Length: the server de-chunks and terminates it

    status, headers, _ = call_wsgi(
        apps[name], {"PATH_INFO": target(name), "wsgi.input": body, "wsgi.input_terminated": True}
    )

    assert status.startswith("413 ")
    assert headers["Content-Type"] == "application/problem+json"
    assert body.consumed == limit_of(name, container.settings) + 1


def test_a_chunked_body_within_the_limit_is_handed_on_whole(
    apps: dict[str, flask.Flask], container: Container
) -> None:
    data = order_facts(str(uuid.uuid4()))
    created = Event(EventType.ORDER_CREATED, str(uuid.uuid4()), data["orderId"], data)
    headers, data = to_binary(build(created, "test"))
    environ = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    environ["CONTENT_TYPE"] = headers["content-type"]
    environ["HTTP_AUTHORIZATION"] = tokens.bearer("inventory")

    status, _, answer = call_wsgi(
        apps["inventory"],
        {**environ, "wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True},
    )

    assert status.startswith("200 "), answer
    assert apps["inventory"].config["MAX_CONTENT_LENGTH"] == container.settings.max_event_bytes


@pytest.mark.parametrize("name", ["inventory", "order"])
def test_the_limit_is_inclusive_and_comes_from_settings(
    apps: dict[str, flask.Flask], name: str
) -> None:
    settings = Settings(max_event_bytes=1_000, max_request_bytes=1_000)
    fake_container(apps, settings)
    client = sent_by_its_source(apps[name].test_client(), name)
    headers = ce_headers() if name != "order" else {"content-type": "application/json"}

    at_limit = client.post(target(name), headers=headers, data=b" " * 1_000)
    above = client.post(target(name), headers=headers, data=b" " * 1_001)

    assert at_limit.status_code == 400  # read, and refused for what it says
    problem_of(above, 413)


def test_an_oversized_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="MINIMART_MAX_EVENT_BYTES"):
        Settings.from_env({"MINIMART_MAX_EVENT_BYTES": "0"})
    assert Settings.from_env({"MINIMART_MAX_REQUEST_BYTES": "2048"}).max_request_bytes == 2048


@pytest.mark.parametrize(
    ("key", "ceiling"),
    [("MINIMART_MAX_ITEMS_PER_ORDER", MAX_ORDER_LINES),
     ("MINIMART_MAX_QUANTITY_PER_LINE", MAX_LINE_QUANTITY)],
)  # fmt: skip
def test_domain_limits_cannot_exceed_what_the_event_schemas_take(key: str, ceiling: int) -> None:
    assert Settings.from_env({key: str(ceiling)})
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: str(ceiling + 1)})


# -- JSON depth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[" * 65_536, True),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a": "' + b"[" * 1_000 + b'"}', False),  # brackets in a string do not count
        (b'["\\"' + b"[" * 1_000 + b'"]', False),  # nor after an escaped quote
        (b'["\\\\", ' + b"[" * 40 + b"]" * 40 + b"]", True),  # an escaped backslash ends it
        (b"[]" * 10_000, False),  # many, side by side
        (b'{"a": "' + b"[" * 1_000, False),  # an unterminated string runs to the end
        (b"\xff\xfe" + b"{" * 40, True),  # not even UTF-8: still scanned
    ],
)
def test_json_depth_is_read_from_the_bytes(raw: bytes, deep: bool) -> None:
    assert json_depth_exceeds(raw, MAX_JSON_DEPTH) is deep


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("name", SAGA_FUNCTIONS)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_deep_json_is_a_bad_event_not_a_crash(
    client: Callable[[str], FlaskClient], name: str, mode: str
) -> None:
    for body in (b"[" * 65_536, deep(MAX_JSON_DEPTH + 1)):
        if mode == "binary":
            response = client(name).post("/", headers=ce_headers(), data=body)
        else:
            response = client(name).post("/", headers=STRUCTURED, data=structured(body))

        problem = problem_of(response, 400)
        assert problem["detail"] == f"the body nests deeper than {MAX_JSON_DEPTH}"


def test_deep_json_is_a_bad_request_at_the_api(client: Callable[[str], FlaskClient]) -> None:
    response = client("order").post(
        "/orders", headers={"content-type": "application/json"}, data=b"[" * 65_536
    )

    assert problem_of(response, 400)["type"].endswith("/unsupported-json")


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAGA_FUNCTIONS)
def test_an_integer_of_5000_digits_is_a_bad_event(
    client: Callable[[str], FlaskClient], name: str
) -> None:
    body = b'{"orderId": ' + b"9" * 5_000 + b"}"

    binary = client(name).post("/", headers=ce_headers(), data=body)
    in_envelope = client(name).post("/", headers=STRUCTURED, data=structured(body))

    for response in (binary, in_envelope):
        detail = problem_of(response, 400)["detail"]
        assert "4300 digits" in detail
        assert len(detail) <= MAX_REASON_CHARS


def test_an_integer_of_5000_digits_is_a_bad_request_at_the_api(
    client: Callable[[str], FlaskClient],
) -> None:
    body = b'{"customerId": ' + b"9" * 5_000 + b"}"

    response = client("order").post("/orders", headers={"content-type": "application/json"},
                                    data=body)  # fmt: skip

    assert problem_of(response, 400)["type"].endswith("/malformed-json")


def with_line(**changes: Any) -> dict[str, Any]:
    data = order_facts(str(uuid.uuid4()))
    data["items"][0].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (with_line(unitPriceCents=BIGINT_MAX + 1), "items/0/unitPriceCents"),
        (with_line(quantity=MAX_LINE_QUANTITY + 1), "items/0/quantity"),
        ({**order_facts(str(uuid.uuid4())), "totalCents": 10**30}, "totalCents"),
        ({**order_facts(str(uuid.uuid4())), "customerId": MAX_CUSTOMER_ID + 1}, "customerId"),
    ],
)
def test_integers_beyond_what_the_stores_take_are_refused(data: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidEvent, match=f"order.created: {where}: "):
        parse(CloudEvent({"type": EventType.ORDER_CREATED.value, "source": "/t"}, data))


def test_the_largest_integers_the_stores_take_are_accepted() -> None:
    data = with_line(unitPriceCents=BIGINT_MAX, quantity=MAX_LINE_QUANTITY)
    data.update(totalCents=BIGINT_MAX, customerId=MAX_CUSTOMER_ID)

    parse(CloudEvent({"type": EventType.ORDER_CREATED.value, "source": "/t"}, data))


# -- counts and lengths --------------------------------------------------------------------


def event_of(event_type: EventType, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent({"type": event_type.value, "source": "/t"}, data)


def test_an_order_of_more_lines_than_the_ceiling_is_refused() -> None:
    data = order_facts(str(uuid.uuid4()))
    line = data["items"][0]
    data["items"] = [line] * MAX_ORDER_LINES
    parse(event_of(EventType.ORDER_CREATED, data))

    data["items"] = [line] * (MAX_ORDER_LINES + 1)
    with pytest.raises(InvalidEvent, match=r"order\.created: items: "):
        parse(event_of(EventType.ORDER_CREATED, data))


@pytest.mark.parametrize(
    ("event_type", "field", "longest"),
    [
        (EventType.INVENTORY_REJECTED, "reason", 500),
        (EventType.SHIPPING_PREPARED, "labelId", 200),
        (EventType.NOTIFICATION_SENT, "template", 200),
        (EventType.NOTIFICATION_SENT, "streamId", 200),
        (EventType.PAYMENT_CAPTURED, "paymentId", 200),
    ],
)
def test_strings_are_bounded(event_type: EventType, field: str, longest: int) -> None:
    order_id = str(uuid.uuid4())
    base = {**order_facts(order_id), "reason": "r", "labelId": "L", "template": "t",
            "streamId": "1-0", "paymentId": "P"}  # fmt: skip
    parse(event_of(event_type, {**base, field: "x" * longest}))

    with pytest.raises(InvalidEvent, match=f"{event_type.short}: {field}: ") as refused:
        parse(event_of(event_type, {**base, field: "x" * (longest + 1)}))

    assert len(str(refused.value)) <= MAX_REASON_CHARS  # the value is quoted, clipped


@pytest.mark.parametrize("field", ["sku", "name", "line1", "city", "postalCode"])
def test_order_text_is_bounded(field: str) -> None:
    data = order_facts(str(uuid.uuid4()))
    target_ = data["items"][0] if field == "sku" else data["shippingAddress"]
    target_[field] = "x" * 201

    with pytest.raises(InvalidEvent, match=f"/{field}: "):
        parse(event_of(EventType.ORDER_CREATED, data))


def test_an_event_id_is_bounded() -> None:
    data = order_facts(str(uuid.uuid4()))
    event = CloudEvent({"type": EventType.ORDER_CREATED.value, "source": "/t", "id": "i" * 256},
                       data)  # fmt: skip
    parse(event)

    event["id"] = "i" * 257
    with pytest.raises(InvalidEvent, match="the id must be at most 256"):
        parse(event)


# -- NUL and odd unicode -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("plain", None),
        ("caf\u00e9 \U0001f600 \u20ac", None),  # non-ASCII and astral: fine
        ("a\x00b", "(root): contains a NUL character"),
        ("\ud800", "(root): contains a lone surrogate"),
        ({"a": [1, {"b": "x\udfff"}]}, "/a/1/b: contains a lone surrogate"),
        ({"ok": 1, "k\x00": 1}, "(root): a key contains a NUL character or a lone surrogate"),
    ],
)
def test_unsafe_text_finds_what_no_store_takes(value: Any, found: str | None) -> None:
    assert unsafe_text(value) == found


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["shippingAddress"].update(name="Ada\x00"),  # a declared field
        lambda d: d["shippingAddress"].update(line1="\udc00"),
        lambda d: d.update(note="x\x00"),  # undeclared: copied on by inventory
        lambda d: d.update({"n\x00te": 1}),  # a key
    ],
)
def test_nul_and_lone_surrogates_are_bad_events(
    client: Callable[[str], FlaskClient], container: Container, change: Any
) -> None:
    data = order_facts(str(uuid.uuid4()))
    change(data)
    body = json.dumps(data).encode()  # ensure_ascii: as \u0000 and \udc00 escapes

    response = client("inventory").post("/", headers=ce_headers(), data=body)

    assert "order.created: " in problem_of(response, 400)["detail"]
    assert container.publisher.published == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "x"}',
        '{"a": "caf\u00e9 \U0001f600"}'.encode(),
        b'{"a": "\\u00e9 \\ud83d\\ude00"}',  # an escaped pair: safe, but the walk decides
        b'{"a": "\\u0000"}',
        b'{"a": "\\uDBFF"}',
        b'{"k\\u0000": 1}',
        b'{"a": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate: json reads it (surrogatepass)
        json.dumps({"a": "\x00"}).encode("utf-16"),
        b'{"a": "\\\\u0000"}',  # an escaped backslash, then "u0000": safe, the walk decides
    ],
)
def test_the_byte_scan_never_clears_a_body_the_walk_refuses(body: bytes) -> None:
    if unsafe_text(json.loads(body)) is not None:
        assert json_text_may_be_unsafe(body)


def test_the_byte_scan_clears_plain_bodies() -> None:
    assert not json_text_may_be_unsafe(json.dumps(order_facts(str(uuid.uuid4()))).encode())
    assert not json_text_may_be_unsafe('{"a": "caf\u00e9 \\u00e9"}'.encode())


def test_a_utf8_encoded_surrogate_in_the_body_is_a_bad_event(
    client: Callable[[str], FlaskClient], container: Container
) -> None:
    data = order_facts(str(uuid.uuid4()))
    data["note"] = "SURROGATE"
    body = json.dumps(data).encode().replace(b"SURROGATE", b"\xed\xa0\x80")

    response = client("inventory").post("/", headers=ce_headers(), data=body)

    assert "order.created: /note: contains a lone surrogate" in problem_of(response, 400)["detail"]
    assert container.publisher.published == []  # type: ignore[attr-defined]


def test_a_nul_in_a_percent_encoded_event_id_is_a_bad_event(
    client: Callable[[str], FlaskClient],
) -> None:
    body = json.dumps(order_facts(str(uuid.uuid4()))).encode()

    response = client("inventory").post("/", headers=ce_headers(**{"ce-id": "a%00b"}), data=body)

    assert "id" in problem_of(response, 400)["detail"]


def test_a_lone_surrogate_in_a_structured_event_id_is_a_bad_event(
    client: Callable[[str], FlaskClient],
) -> None:
    data = order_facts(str(uuid.uuid4()))
    envelope = {"specversion": "1.0", "type": EventType.ORDER_CREATED.value, "source": "/t",
                "id": "x\ud800", "datacontenttype": "application/json", "data": data}  # fmt: skip

    response = client("inventory").post("/", headers=STRUCTURED, data=json.dumps(envelope))

    assert "the id must be" in problem_of(response, 400)["detail"]


@pytest.mark.parametrize("text", ["Ada\\u0000", "\\ud800", "x\\udfffy"])
def test_nul_and_lone_surrogates_are_bad_requests_at_the_api(
    client: Callable[[str], FlaskClient], text: str
) -> None:
    body = ('{"customerId": 1, "items": [{"sku": "SKU-42", "quantity": 1}], '
            f'"shippingAddress": {{"country": "US", "name": "{text}"}}}}')  # fmt: skip

    response = client("order").post("/orders", headers={"content-type": "application/json"},
                                    data=body)  # fmt: skip

    problem = problem_of(response, 400)
    assert problem["type"].endswith("/unsupported-json")
    assert problem["detail"].startswith("/shippingAddress/name: contains")


# -- what functions-framework cannot read is a 400, a fault of the handler still a 500 ---------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (STRUCTURED, b"\xff\xfe{not utf-8"),
        (STRUCTURED, ENVELOPE + b'"data_base64": 5}'),
        (STRUCTURED, ENVELOPE + b'"data_base64": "%%%"}'),
        (STRUCTURED, structured(b"1" + b"0" * 4_400)),
    ],
)
@pytest.mark.parametrize("name", SAGA_FUNCTIONS)
def test_a_body_functions_framework_cannot_read_is_a_bad_event(
    client: Callable[[str], FlaskClient], name: str, headers: dict[str, str], body: bytes
) -> None:
    response = client(name).post("/", headers=headers, data=body)

    assert response.status_code < 500, response.data[:300]
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (ce_headers(), b"[" * 65_536),
        (STRUCTURED, structured(b"[" * 65_536)),
        (STRUCTURED, structured(b"9" * 5_000)),
        (STRUCTURED, b"\xff\xfe{not utf-8"),
    ],
)
def test_the_redrive_function_reads_any_letter_within_its_limit(
    client: Callable[[str], FlaskClient], headers: dict[str, str], body: bytes
) -> None:
    """It refuses no letter but an oversized one (what it refuses is parked): it keeps them."""
    response = client("redrive").post("/", headers=headers, data=body)

    assert response.status_code == 200, response.data[:300]
    assert response.get_json()["verdict"] == "keep"


def test_a_fault_of_the_handler_is_still_a_server_error(
    client: Callable[[str], FlaskClient], container: Container
) -> None:
    container.publisher.fail = True  # type: ignore[attr-defined]
    created = order_facts(str(uuid.uuid4()))
    event = Event(EventType.ORDER_CREATED, str(uuid.uuid4()), created["orderId"], created)
    for headers, body in (to_binary(build(event, "t")), to_structured(build(event, "t"))):
        assert client("inventory").post("/", headers=headers, data=body).status_code == 500


# -- the API schema and the ingress agree ---------------------------------------------------


def openapi_order_request() -> dict[str, Any]:
    document = yaml.safe_load((PROJECT_ROOT / "api" / "openapi.yaml").read_text())
    schemas: dict[str, Any] = document["components"]["schemas"]
    return {"request": schemas["OrderRequest"], "address": schemas["Address"]}


def test_the_api_schema_states_the_ingress_bounds() -> None:
    settings = Settings()
    schema = openapi_order_request()
    request, address = schema["request"]["properties"], schema["address"]["properties"]
    assert request["customerId"]["maximum"] == MAX_CUSTOMER_ID
    assert request["items"]["maxItems"] == settings.max_items_per_order
    line = request["items"]["items"]["properties"]
    assert line["quantity"]["maximum"] == settings.max_quantity_per_line
    for field in ("name", "line1", "city", "postalCode"):
        assert address[field]["maxLength"] == 200
        assert address[field]["pattern"] == SCHEMAS[EventType.ORDER_CREATED]["properties"][
            "shippingAddress"]["properties"][field]["pattern"]  # fmt: skip
    limits = OrderLimits(settings.max_items_per_order, settings.max_quantity_per_line)

    def valid(**changes: Any) -> bool:
        body = {"customerId": 1, "items": [{"sku": "SKU-1", "quantity": 1}],
                "shippingAddress": {"country": "US"}}  # fmt: skip
        body.update(changes)
        try:
            parse_order_request(body, limits)
        except ValueError:
            return False
        return True

    assert valid(customerId=MAX_CUSTOMER_ID) and not valid(customerId=MAX_CUSTOMER_ID + 1)
    many = [{"sku": f"SKU-{i}", "quantity": 1} for i in range(settings.max_items_per_order + 1)]
    assert valid(items=many[:-1]) and not valid(items=many)
    most = settings.max_quantity_per_line
    assert valid(items=[{"sku": "S", "quantity": most}])
    assert not valid(items=[{"sku": "S", "quantity": most + 1}])
    assert valid(shippingAddress={"country": "US", "name": "x" * 200})
    assert not valid(shippingAddress={"country": "US", "name": "x" * 201})


def largest_order(lines: int) -> dict[str, Any]:
    return {
        "customerId": MAX_CUSTOMER_ID,
        "items": [{"sku": f"{i:064d}", "quantity": MAX_LINE_QUANTITY} for i in range(lines)],
        "shippingAddress": {
            **{field: "\u20ac" * 200 for field in ("name", "line1", "city", "postalCode")},
            "country": "US",
        },
    }


def test_the_largest_legal_order_fits_the_body_limits() -> None:
    """The largest order the API takes by default fits its body limit; at the ceiling the
    domain's settings can reach, its payment.captured (structured, the largest form of the
    largest event) still fits every function's limit and every schema bound."""
    settings = Settings()
    assert len(json.dumps(largest_order(settings.max_items_per_order))) <= (
        settings.max_request_bytes // 4
    )
    order = largest_order(MAX_ORDER_LINES)
    order_id = str(uuid.uuid4())
    items = [{**line, "unitPriceCents": BIGINT_MAX} for line in order["items"]]
    data = {**order, "orderId": order_id, "totalCents": BIGINT_MAX, "items": items}
    event = build(Event(EventType.PAYMENT_CAPTURED, str(uuid.uuid4()), order_id,
                        {**data, "paymentId": "P" * 200}), "payment")  # fmt: skip
    _, body = to_structured(event)

    parse(event)  # within every schema bound
    assert len(body) <= settings.max_event_bytes
