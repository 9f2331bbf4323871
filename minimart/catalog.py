"""The event catalog: every event type, its topic, its JSON schema and how to build it.

Nothing else in minimart spells an event type or a topic name. One topic per event type;
every record is keyed by order id (CloudEvents ``partitionkey`` extension), so all events of
one order land on the same partition number of their topics.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import fastjsonschema
import jsonschema
from cloudevents.http import CloudEvent

from minimart.limits import (
    BIGINT_MAX,
    MAX_CUSTOMER_ID,
    MAX_LINE_QUANTITY,
    MAX_ORDER_LINES,
    SAFE_TEXT_PATTERN,
    clip,
    json_text_may_be_unsafe,
    unsafe_text,
)

SOURCE_PREFIX = "/minimart"
DEAD_LETTER_TOPIC = "minimart.deadletter"
# Where the source that reads DEAD_LETTER_TOPIC (redrive-source) dead-letters what it gives up
# on: a topic no KafkaSource reads, so no letter can cycle (eventing/redrive-source.yaml).
PARKED_TOPIC = "minimart.deadletter.parked"
DEAD_LETTER_TOPICS = (DEAD_LETTER_TOPIC, PARKED_TOPIC)
# The extensions a KafkaSource adds to what it dead-letters (Knative's names), and the one
# minimart adds to an event each time it is re-driven.
ERROR_EXTENSIONS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")
REDRIVES_EXTENSION = "minimartredrives"
_EVENT_ID_NAMESPACE = uuid.UUID("5b0e5f0e-9d1c-4c6e-9c61-6d696e696d61")


class EventType(StrEnum):
    ORDER_CREATED = "com.minimart.order.created"
    INVENTORY_RESERVED = "com.minimart.inventory.reserved"
    INVENTORY_REJECTED = "com.minimart.inventory.rejected"
    INVENTORY_RELEASED = "com.minimart.inventory.released"
    PAYMENT_CAPTURED = "com.minimart.payment.captured"
    PAYMENT_DECLINED = "com.minimart.payment.declined"
    PAYMENT_REFUNDED = "com.minimart.payment.refunded"
    SHIPPING_PREPARED = "com.minimart.shipping.prepared"
    SHIPPING_FAILED = "com.minimart.shipping.failed"
    ORDER_CONFIRMED = "com.minimart.order.confirmed"
    ORDER_CANCELLED = "com.minimart.order.cancelled"
    NOTIFICATION_SENT = "com.minimart.notification.sent"

    @property
    def topic(self) -> str:
        return "minimart." + self.value.removeprefix("com.minimart.")

    @property
    def short(self) -> str:
        """`order.created`, as shown in timelines and metrics."""
        return self.value.removeprefix("com.minimart.")

    @classmethod
    def for_topic(cls, topic: str) -> EventType:
        for member in cls:
            if member.topic == topic:
                return member
        raise KeyError(topic)


ALL_TOPICS: tuple[str, ...] = (*(t.topic for t in EventType), *DEAD_LETTER_TOPICS)

# Every bound fits the stores (minimart.limits): integers within PostgreSQL's bigint, strings
# without NUL or lone surrogates and of a bounded length, arrays of a bounded count.
# (Strings and keys that no schema names are checked by ``parse`` with ``unsafe_text``.)
_ORDER_ID = {"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36}
_MONEY = {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
_CUSTOMER_ID = {"type": "integer", "minimum": 1, "maximum": MAX_CUSTOMER_ID}


def _text(max_length: int, min_length: int = 0) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": min_length,
        "maxLength": max_length,
        "pattern": SAFE_TEXT_PATTERN,
    }


_REASON = _text(500, min_length=1)
_ID_TEXT = _text(200, min_length=1)  # payment, label and stream ids, template names
_LINE = {
    "type": "object",
    "required": ["sku", "quantity", "unitPriceCents"],
    "properties": {
        "sku": _text(64, min_length=1),
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_LINE_QUANTITY},
        "unitPriceCents": _MONEY,
    },
}
_ADDRESS = {
    "type": "object",
    "required": ["country"],
    "properties": {
        "name": _text(200),
        "line1": _text(200),
        "city": _text(200),
        "postalCode": _text(200),
        "country": {"type": "string", "minLength": 2, "maxLength": 2, "pattern": "^[A-Z]{2}$"},
    },
}
_ORDER_FACTS = {
    "orderId": _ORDER_ID,
    "customerId": _CUSTOMER_ID,
    "items": {"type": "array", "minItems": 1, "maxItems": MAX_ORDER_LINES, "items": _LINE},
    "totalCents": _MONEY,
    "shippingAddress": _ADDRESS,
}
_ORDER_FACTS_REQUIRED = ["orderId", "customerId", "items", "totalCents", "shippingAddress"]


def _schema(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": required,
        "properties": properties,
    }


SCHEMAS: Mapping[EventType, dict[str, Any]] = {
    EventType.ORDER_CREATED: _schema(_ORDER_FACTS_REQUIRED, **_ORDER_FACTS),
    EventType.INVENTORY_RESERVED: _schema(_ORDER_FACTS_REQUIRED, **_ORDER_FACTS),
    EventType.INVENTORY_REJECTED: _schema(["orderId", "reason"], orderId=_ORDER_ID, reason=_REASON),
    EventType.INVENTORY_RELEASED: _schema(["orderId", "reason"], orderId=_ORDER_ID, reason=_REASON),
    EventType.PAYMENT_CAPTURED: _schema(
        [*_ORDER_FACTS_REQUIRED, "paymentId"], paymentId=_ID_TEXT, **_ORDER_FACTS
    ),
    EventType.PAYMENT_DECLINED: _schema(
        ["orderId", "reason"], orderId=_ORDER_ID, reason=_REASON, amountCents=_MONEY
    ),
    EventType.PAYMENT_REFUNDED: _schema(
        ["orderId", "reason", "amountCents"],
        orderId=_ORDER_ID,
        reason=_REASON,
        amountCents=_MONEY,
    ),
    EventType.SHIPPING_PREPARED: _schema(
        ["orderId", "labelId"], orderId=_ORDER_ID, labelId=_ID_TEXT
    ),
    EventType.SHIPPING_FAILED: _schema(["orderId", "reason"], orderId=_ORDER_ID, reason=_REASON),
    EventType.ORDER_CONFIRMED: _schema(
        ["orderId", "customerId"],
        orderId=_ORDER_ID,
        customerId=_CUSTOMER_ID,
        totalCents=_MONEY,
    ),
    EventType.ORDER_CANCELLED: _schema(
        ["orderId", "customerId", "reason"],
        orderId=_ORDER_ID,
        customerId=_CUSTOMER_ID,
        reason=_REASON,
    ),
    EventType.NOTIFICATION_SENT: _schema(
        ["orderId", "template", "streamId"],
        orderId=_ORDER_ID,
        template=_ID_TEXT,
        streamId=_ID_TEXT,
    ),
}


def _is_uuid(value: str) -> bool:
    """The ``uuid`` format as jsonschema's FormatChecker checks it (dashed, 36 characters)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return all(value[position] == "-" for position in (8, 13, 18, 23))


# Every incoming event is validated: compiled once per process to plain Python (fastjsonschema,
# ~20x cheaper per event than interpreting the schema). jsonschema only runs on an event that
# failed, to name the offending field in the rejection (and stays the reference: an event it
# accepts is accepted).
_FAST_VALIDATORS = {
    event_type: fastjsonschema.compile(schema, formats={"uuid": _is_uuid})
    for event_type, schema in SCHEMAS.items()
}
_VALIDATORS = {
    event_type: jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    for event_type, schema in SCHEMAS.items()
}


# An event id is a primary-key column of every step's processed_events (a btree index takes
# ~2,700 bytes a row): ids of the saga are uuids, a producer's may be longer, not unbounded.
MAX_EVENT_ID_CHARS = 256


class InvalidEvent(ValueError):
    """An incoming event is malformed: unknown type or data that breaks its schema."""


@dataclass(frozen=True)
class Event:
    """A domain event as handlers see it: no transport, no headers."""

    type: EventType
    id: str
    order_id: str
    data: Mapping[str, Any]


_MAX_ATTRIBUTE_CHARS = 1024


def _rfc3339(value: str) -> bool:
    """A CloudEvents ``time``: an RFC 3339 timestamp (date, ``T``, time, offset or ``Z``)."""
    if not 20 <= len(value) <= 40 or value[10:11] not in ("T", "t"):
        return False
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return moment.tzinfo is not None


def envelope_problem(attributes: Mapping[str, Any]) -> str | None:
    """What breaks the CloudEvents 1.0 envelope (the attributes every event must carry, and
    the type of each), or None. cloudevents 1.12 accepts an empty ``id`` or ``source``, a
    number as ``id`` and any text as ``time``; this does not."""
    for name in ("id", "source", "type"):
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            return f"attribute {name!r} must be a non-empty string"
    for name, value in attributes.items():
        if isinstance(value, str) and (len(value) > _MAX_ATTRIBUTE_CHARS or "\x00" in value):
            return f"attribute {name!r}: over {_MAX_ATTRIBUTE_CHARS} characters or a NUL"
    if attributes.get("specversion") != "1.0":
        return "specversion must be 1.0"
    time = attributes.get("time")
    if time is not None and not (isinstance(time, str) and _rfc3339(time)):
        return "attribute 'time' must be an RFC 3339 timestamp"
    return None


def order_id_problem(attributes: Mapping[str, Any], order_id: str) -> str | None:
    """The one rule for an event's order: ``data.orderId``; ``subject`` and ``partitionkey``
    (the record key), when present, must name the same order."""
    for name in ("subject", "partitionkey"):
        value = attributes.get(name)
        if value is not None and value != order_id:
            return f"attribute {name!r} names another order than data.orderId"
    return None


def parse(cloud_event: CloudEvent, body: bytes | None = None) -> Event:
    """Turn an incoming CloudEvent into a validated ``Event``; raise ``InvalidEvent`` if bad.

    ``body``: the request body the event was decoded from, if at hand; when its bytes cannot
    hold a NUL or a lone surrogate (``json_text_may_be_unsafe``), the data is not walked for
    them (a payment.captured parse: 15.7 -> 11.4 µs)."""
    attributes = cloud_event.get_attributes()
    problem = envelope_problem(attributes)
    if problem is not None:
        raise InvalidEvent(problem)
    try:
        event_type = EventType(str(attributes.get("type")))
    except ValueError as exc:
        raise InvalidEvent(clip(f"unknown event type {attributes.get('type')!r}")) from exc
    event_id = attributes["id"]  # a non-empty string (envelope_problem)
    if len(event_id) > MAX_EVENT_ID_CHARS or unsafe_text(event_id):
        raise InvalidEvent(
            f"{event_type.short}: the id must be at most {MAX_EVENT_ID_CHARS} characters, "
            "without NUL or lone surrogates"
        )
    data = cloud_event.get_data()
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"{event_type.short}: data must be a JSON object")
    try:
        _FAST_VALIDATORS[event_type](data)
    except fastjsonschema.JsonSchemaValueException:
        errors = sorted(_VALIDATORS[event_type].iter_errors(data), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            raise InvalidEvent(clip(f"{event_type.short}: {where}: {first.message}")) from None
    problem = order_id_problem(attributes, data["orderId"])
    if problem is not None:
        raise InvalidEvent(f"{event_type.short}: {problem}")
    # also the keys and values no schema names
    unsafe = unsafe_text(data) if body is None or json_text_may_be_unsafe(body) else None
    if unsafe is not None:
        raise InvalidEvent(clip(f"{event_type.short}: {unsafe}"))
    return Event(type=event_type, id=event_id, order_id=data["orderId"], data=data)


def derived_event_id(cause_id: str, event_type: EventType) -> str:
    """Deterministic id of the event that ``cause_id`` leads to: replays re-emit the same id."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{cause_id}/{event_type.value}"))


def build(event: Event, source: str) -> CloudEvent:
    """The outgoing CloudEvent for ``event`` (structured attributes, JSON data, order-id key)."""
    attributes = {
        "type": event.type.value,
        "source": f"{SOURCE_PREFIX}/{source}",
        "id": event.id,
        "subject": event.order_id,
        "datacontenttype": "application/json",
        "partitionkey": event.order_id,
        "dataschema": f"https://minimart.dev/schemas/{event.type.short}.json",
    }
    return CloudEvent(attributes, dict(event.data))


def next_event(cause: Event, event_type: EventType, data: Mapping[str, Any]) -> Event:
    """The event a step emits in reaction to ``cause``, with a deterministic id."""
    return Event(
        type=event_type,
        id=derived_event_id(cause.id, event_type),
        order_id=cause.order_id,
        data=data,
    )
