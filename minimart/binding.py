"""CloudEvents bindings in one place: a Kafka record <-> a CloudEvent <-> an HTTP request.

Kept apart from any transport (no socket, no client, no retry here), as the CloudEvents SDK
keeps its bindings apart from its event model. Read by the dispatcher (a record to the request
it sends), every function's entrypoint (a request's attributes decoded), the redrive function
(any request, valid or not) and the console (records it lists, replays or re-drives): a change
of the wire format is a change of this module.

- Kafka protocol binding: binary mode carries the attributes as ``ce_*`` headers and the data
  as the value; structured mode (``application/cloudevents+json``) both in one JSON value. A
  record that is no CloudEvent is wrapped, as Knative's KafkaSource does (type
  ``dev.knative.kafka.event``, id ``partition:<p>/offset:<o>``, the key in ``key``).
- HTTP protocol binding: binary mode carries the attributes as ``ce-*`` headers, their values
  percent-encoded (3.1.3.2: space, ``"``, ``%`` and everything outside printable ASCII);
  cloudevents 1.12 (what functions-framework pins) neither encodes nor decodes them, nor
  accepts a request that is no valid event, so both directions live here.
- The Knative error extensions a dead letter carries (``catalog.ERROR_EXTENSIONS``).
- An event's order: ``order_id_of`` (the catalog makes ``subject`` and ``partitionkey`` agree
  with ``data.orderId`` on every event it accepts).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import unquote

NAMESPACE = "minimart"
WRAPPED_EVENT_TYPE = "dev.knative.kafka.event"
STRUCTURED_CONTENT_TYPE = "application/cloudevents"
# Members of a structured-mode event that are its data, not attributes.
STRUCTURED_DATA = ("data", "data_base64")
_TRACE_HEADERS = ("traceparent", "tracestate")
_NOT_EXTENSION_CHARS = re.compile(r"[^a-z0-9]")
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,64}$")  # CloudEvents: lower-case alphanumerics
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")


# -- HTTP requests ---------------------------------------------------------------------------


def header_text(value: str) -> str:
    """A CloudEvents attribute as an HTTP header carries it, decoded (HTTP binding 3.1.3.2):
    percent-decoded (UTF-8); a value in double quotes, as older senders wrote them, unquoted."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return unquote(value, errors="replace") if "%" in value else value


@dataclass(frozen=True)
class HttpEvent:
    """What a request says of its event: attributes (extensions too) and data as bytes.
    ``readable`` is False for a request that is no CloudEvent in either mode."""

    attributes: Mapping[str, str] = field(default_factory=dict)
    data: bytes = b""
    readable: bool = True


def _attribute_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _structured(body: bytes) -> HttpEvent:
    """A structured-mode request's event; unreadable if it is no JSON object, or if its
    members cannot be held as text and bytes (a lone surrogate, nesting too deep to write)."""
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            return HttpEvent(readable=False, data=body)
        attributes = {
            str(k): _attribute_text(v) for k, v in document.items() if k not in STRUCTURED_DATA
        }
        if isinstance(document.get("data_base64"), str):
            data = base64.b64decode(document["data_base64"], validate=True)
        elif "data" in document:
            value = document["data"]
            data = (value if isinstance(value, str) else json.dumps(value)).encode()
        else:
            data = b""
        for text in attributes.values():
            text.encode()  # a lone surrogate cannot go on as a header or a record
    except (ValueError, RecursionError, binascii.Error):  # UnicodeError is a ValueError
        return HttpEvent(readable=False, data=body)
    return HttpEvent(attributes, data)


def from_http(headers: Iterable[tuple[str, str]], body: bytes) -> HttpEvent:
    """The event of a request with ``headers`` (name, value pairs) and ``body``, in binary or
    structured mode; unreadable (``readable=False``) when it is neither."""
    lowered = [(name.lower(), value) for name, value in headers]
    content_type = next((v for n, v in lowered if n == "content-type"), None)
    attributes = {n[3:]: header_text(v) for n, v in lowered if n.startswith("ce-")}
    if "specversion" in attributes:
        if content_type is not None:
            attributes["datacontenttype"] = content_type
        return HttpEvent(attributes, body)
    if (content_type or "").startswith(STRUCTURED_CONTENT_TYPE):
        return _structured(body)
    return HttpEvent(readable=False, data=body)


def structured_problem(body: bytes) -> str | None:
    """What breaks a structured-mode event that cloudevents 1.12 lets through: ``data`` and
    ``data_base64`` both present (it silently keeps one). None if nothing (or not JSON: the
    SDK refuses that itself)."""
    if b'"data_base64"' not in body or b'"data"' not in body:
        return None  # the common case, without parsing the body a second time
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(document, dict) and "data" in document and "data_base64" in document:
        return "a structured event carries both data and data_base64"
    return None


# -- Kafka records ---------------------------------------------------------------------------


class Record(Protocol):
    """The fields of a kafka-python ``ConsumerRecord`` that delivery uses."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Iterable[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A Kafka record: what a dispatcher consumed, or what the console recorded or loaded
    (``console.replay.RecordedEvent`` adds what the console reads from it)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass(frozen=True)
class OutgoingEvent:
    """A record as a CloudEvent: ``ce_*`` attributes, content type, trace, body.

    Binary mode normally; a record already in structured mode (``application/cloudevents+json``
    and no ``ce_`` headers) is passed through as is.
    """

    attributes: Mapping[str, str]
    content_type: str | None
    trace: Mapping[str, str]
    key: bytes | None
    body: bytes
    structured: bool = False

    def with_extensions(
        self, extensions: Mapping[str, str], dropping: Iterable[str] = ()
    ) -> OutgoingEvent:
        """This event with more extension attributes (inside the JSON when structured), and
        without the attributes ``dropping``."""
        dropped = set(dropping)
        if not self.structured:
            kept = {k: v for k, v in self.attributes.items() if k not in dropped}
            return replace(self, attributes={**kept, **extensions})
        try:
            document = json.loads(self.body)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            return replace(self, attributes={**self.attributes, **extensions})
        kept = {k: v for k, v in document.items() if k not in dropped}
        body = json.dumps({**kept, **extensions}).encode()
        return replace(self, body=body)

    def http_headers(self) -> dict[str, str]:
        """The request's headers; a name that is no token, or a value that would break the
        request's framing (CR, LF, other controls), coming from a record is left out."""
        headers = {
            f"ce-{name}": http_header_value(v)
            for name, v in self.attributes.items()
            if _ATTRIBUTE_NAME.match(name)
        }
        if self.content_type is not None and _HEADER_VALUE.match(self.content_type):
            headers["Content-Type"] = self.content_type
        for name, value in self.trace.items():
            if _HEADER_VALUE.match(value):
                headers[name] = value
        return headers

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        headers = [(f"ce_{name}", v.encode()) for name, v in self.attributes.items()]
        if self.content_type is not None:
            headers.append(("content-type", self.content_type.encode()))
        headers.extend((name, v.encode()) for name, v in self.trace.items())
        return headers


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", errors="replace")


# CloudEvents HTTP binding 3.1.3.2: a header value percent-encodes space, `"`, `%` and every
# character outside printable ASCII (as UTF-8 octets); everything else goes as is.
_HEADER_SAFE = re.compile(r"^[\x21\x23\x24\x26-\x7e]*$")


def http_header_value(value: str) -> str:
    """A CloudEvents HTTP header value, percent-encoded as the HTTP binding requires."""
    if _HEADER_SAFE.match(value):
        return value
    out = []
    for char in value:
        if "!" <= char <= "~" and char not in '"%':
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def wrapped_source(source_name: str, topic: str) -> str:
    return f"/apis/v1/namespaces/{NAMESPACE}/kafkasources/{source_name}#{topic}"


def _json_object(body: bytes) -> bool:
    """Whether ``body`` is a JSON object (only asked of the rare structured-mode record)."""
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


def to_event(source_name: str, record: Record) -> OutgoingEvent:
    """The CloudEvent a record stands for; records without ``ce_specversion`` are wrapped."""
    attributes: dict[str, str] = {}
    other: dict[str, str] = {}
    content_type: str | None = None
    trace: dict[str, str] = {}
    for name, raw in record.headers or ():
        lowered = name.lower()
        if lowered.startswith("ce_"):
            attributes[lowered[3:]] = _text(raw)
        elif lowered == "content-type":
            content_type = _text(raw)
        elif lowered in _TRACE_HEADERS:
            trace[lowered] = _text(raw)
        else:
            other[lowered] = _text(raw)
    body = record.value or b""
    if "specversion" in attributes:
        return OutgoingEvent(attributes, content_type, trace, record.key, body)
    if content_type is not None and content_type.startswith(STRUCTURED_CONTENT_TYPE):
        if _json_object(body):
            return OutgoingEvent({}, content_type, trace, record.key, body, structured=True)
        # Says structured, but is no JSON object: no CloudEvent, so wrapped like one (and
        # its dead letter can carry the knativeerror* extensions as headers).
        other["content-type"], content_type = content_type, None
    wrapped = {
        "specversion": "1.0",
        "id": f"partition:{record.partition}/offset:{record.offset}",
        "source": wrapped_source(source_name, record.topic),
        "type": WRAPPED_EVENT_TYPE,
    }
    if record.timestamp is not None and record.timestamp >= 0:
        moment = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
        wrapped["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if record.key is not None:
        try:
            wrapped["key"] = record.key.decode("utf-8")
        except UnicodeDecodeError:
            wrapped["key"] = base64.b64encode(record.key).decode("ascii")
    for name, value in other.items():
        wrapped["kafkaheader" + _NOT_EXTENSION_CHARS.sub("", name)] = value
    return OutgoingEvent(wrapped, content_type, trace, record.key, body)


def order_id_of(attributes: Mapping[str, str], key: bytes | None) -> str | None:
    """The order an event belongs to, read without its data: ``partitionkey``, else
    ``subject``, else the record key (the catalog holds the three equal to ``data.orderId``)."""
    for name in ("partitionkey", "subject"):
        value = attributes.get(name)
        if value:
            return value
    return None if key is None else key.decode("utf-8", errors="replace")
