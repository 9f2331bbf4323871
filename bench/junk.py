"""Records nobody wrote a test for: every kind of bad record a producer could put on a saga
topic, drawn from a ``random.Random``.

Used by the fuzz suite (``tests/reliability/test_poison_fuzz.py``, where hypothesis drives the
``Random`` through ``st.randoms()`` and shrinks what fails) and by the poison soak
(``bench.soak --junk-rate``). Every record here must end as exactly one dead letter per
KafkaSource reading its topic, with a 4xx and a reason; none may stall a partition or loop.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minimart.catalog import EventType

Headers = list[tuple[str, bytes]]
STRUCTURED = b"application/cloudevents+json"
# Over the functions' body limit (minimart.settings) and under Kafka's record limit (1 MiB).
OVERSIZED_BYTES = 600 * 1024


@dataclass(frozen=True)
class Junk:
    """A bad record: its kind (for reports), headers and value. The caller picks the key."""

    kind: str
    headers: Headers
    value: bytes


def _ce(event_type: str, rng: random.Random, content_type: bytes = b"application/json",
        **extra: bytes) -> Headers:  # fmt: skip
    event_id = f"junk-{uuid.UUID(int=rng.getrandbits(128))}".encode()
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id), ("ce_source", b"/junk"),
               ("ce_type", event_type.encode())]  # fmt: skip
    headers += [(f"ce_{name}", value) for name, value in extra.items()]
    return [*headers, ("content-type", content_type)]


def _text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "\u00e9\u4e2d\U0001f600\u200b\ufeff\u202e"
    return "".join(rng.choice(alphabet) for _ in range(size))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice([None, True, False, rng.randint(-(2**70), 2**70), rng.random() * 1e300,
                           _text(rng, rng.randint(0, 20)), ""])  # fmt: skip
    if roll < 0.75:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng, rng.randint(0, 8)): _json_value(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}  # fmt: skip


def _broken_data(rng: random.Random) -> dict[str, Any]:
    """An object no schema of the catalog accepts: its orderId is missing or no UUID."""
    data = {
        key: _json_value(rng)
        for key in rng.sample(
            ["customerId", "items", "totalCents", "amountCents", "reason", "sku", "lines"], 3
        )
    }
    if rng.random() < 0.7:
        data["orderId"] = rng.choice([_json_value(rng), "not-a-uuid", str(uuid.uuid4())[:-1]])
    return data


def raw_bytes(rng: random.Random, event_type: EventType) -> Junk:
    return Junk("raw bytes", [], rng.randbytes(rng.randint(0, 512)))


def random_headers(rng: random.Random, event_type: EventType) -> Junk:
    names = ["ce_id", "ce_type", "ce_specversion", "ce_source", "content-type", "traceparent",
             "ce_" + _text(rng, 5), _text(rng, 6), "CE_TYPE", "ce_knativeerrorcode"]  # fmt: skip
    headers = [(rng.choice(names), rng.randbytes(rng.randint(0, 40)))
               for _ in range(rng.randint(1, 6))]  # fmt: skip
    return Junk("random headers", headers, rng.randbytes(rng.randint(0, 256)))


def schema_breaking(rng: random.Random, event_type: EventType) -> Junk:
    return Junk("schema-breaking data", _ce(event_type.value, rng),
                json.dumps(_broken_data(rng)).encode())  # fmt: skip


def deep_nesting(rng: random.Random, event_type: EventType) -> Junk:
    depth = rng.choice([1_000, 5_000, 65_536, 150_000])  # under Kafka's 1 MiB record either way
    opening, closing = ("[", "]") if rng.random() < 0.5 else ('{"a":', "}")
    value = opening * depth + ("1" if closing == "}" else "") + closing * depth
    return Junk("deep nesting", _ce(event_type.value, rng), value.encode())


def huge_number(rng: random.Random, event_type: EventType) -> Junk:
    digits = rng.choice([19, 20, 400, 4_301, 50_000])
    number = "9" * digits
    field = rng.choice(["totalCents", "customerId", "amountCents"])
    value = f'{{"orderId": "{uuid.uuid4()}", "{field}": {number}, "items": []}}'
    return Junk("huge number", _ce(event_type.value, rng), value.encode())


def nul_and_odd_unicode(rng: random.Random, event_type: EventType) -> Junk:
    odd = rng.choice(["\\u0000", "\\ud800", "\\udfff", "\u0000", "\u202e", "\\uffff"])
    value = (f'{{"orderId": "{uuid.uuid4()}", "customerId": 1, "reason": "x{odd}y", '
             f'"items": [{{"sku": "S{odd}", "quantity": 1, "unitPriceCents": 1}}]}}')  # fmt: skip
    if rng.random() < 0.3:
        return Junk("invalid utf-8", _ce(event_type.value, rng), value.encode() + b"\xff\xfe\xc0")
    return Junk("NUL or odd unicode", _ce(event_type.value, rng), value.encode())


def wrong_content_type(rng: random.Random, event_type: EventType) -> Junk:
    content_type = rng.choice([b"text/plain", b"application/xml", b"application/octet-stream",
                               b"application/json; charset=latin-1", b"",
                               b"\xff/\xfe"])  # fmt: skip
    value = json.dumps(_broken_data(rng)).encode()
    return Junk("wrong content type", _ce(event_type.value, rng, content_type), value)


def oversized(rng: random.Random, event_type: EventType) -> Junk:
    padding = "x" * (OVERSIZED_BYTES + rng.randint(0, 1024))
    value = json.dumps({"orderId": str(uuid.uuid4()), "reason": padding}).encode()
    return Junk("oversized", _ce(event_type.value, rng), value)


def unknown_type(rng: random.Random, event_type: EventType) -> Junk:
    name = rng.choice(
        ["com.minimart.bogus", "", "com.minimart." + _text(rng, 4), event_type.value + "x"]
    )
    return Junk("unknown type", _ce(name, rng), b"{}")


def bad_envelope(rng: random.Random, event_type: EventType) -> Junk:
    """Binary mode with a required attribute missing, empty or malformed."""
    headers = _ce(event_type.value, rng)
    name = rng.choice(["ce_id", "ce_source", "ce_specversion", "ce_time"])
    headers = [(k, v) for k, v in headers if k != name]
    headers.append((name, rng.choice([b"", b"0.3", b"not a time", b"2026-13-45T99:00:00Z"])))
    return Junk("bad envelope", headers, json.dumps(_broken_data(rng)).encode())


def _conformance_documents(rng: random.Random, event_type: EventType) -> list[dict[str, Any]]:
    """The invalid structured events of the CloudEvents conformance cases."""
    base = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/junk",
            "type": event_type.value, "datacontenttype": "application/json",
            "data": {"orderId": str(uuid.uuid4())}}  # fmt: skip
    return [
        {k: v for k, v in base.items() if k != "id"},
        {**base, "source": ""},
        {**base, "specversion": "0.1"},
        {**base, "data_base64": "e30="},
        {**base, "time": "not-a-time"},
    ]


def structured_invalid(rng: random.Random, event_type: EventType) -> Junk:
    document = rng.choice(_conformance_documents(rng, event_type))
    return Junk(
        "structured, invalid", [("content-type", STRUCTURED)], json.dumps(document).encode()
    )


def structured_garbage(rng: random.Random, event_type: EventType) -> Junk:
    value = rng.choice([b"{not json", b"[]", b"null", b'"text"', b"[" * 70_000,
                        rng.randbytes(rng.randint(0, 64))])  # fmt: skip
    return Junk("structured, not an object", [("content-type", STRUCTURED)], value)


KINDS: tuple[Callable[[random.Random, EventType], Junk], ...] = (
    raw_bytes, random_headers, schema_breaking, deep_nesting, huge_number, nul_and_odd_unicode,
    wrong_content_type, oversized, unknown_type, bad_envelope, structured_invalid,
    structured_garbage,
)  # fmt: skip


def conformance_junk(event_type: EventType) -> list[Junk]:
    """Each invalid structured event of the conformance cases, once."""
    rng = random.Random(0)  # noqa: S311 (junk for tests, not secrets)
    return [Junk("conformance", [("content-type", STRUCTURED)], json.dumps(doc).encode())
            for doc in _conformance_documents(rng, event_type)]  # fmt: skip


def draw(rng: random.Random, event_type: EventType) -> Junk:
    """One bad record of a random kind, for a topic of ``event_type``."""
    return rng.choice(KINDS)(rng, event_type)
