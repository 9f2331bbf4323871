"""How big and how odd an input may be: the ceilings the stores and the parsers can take, and
the cheap checks that refuse the rest before it can turn into a 5xx.

A leaf module (no minimart imports): the event catalog's schemas, ``Settings`` and the HTTP
guard (``minimart.bounds``) all take their limits from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

# PostgreSQL's bigint: every integer the saga stores (customer ids, cents, quantities).
BIGINT_MAX = 2**63 - 1
# The largest customer id the API takes: 2**53 keeps it exact in every JSON reader (I-JSON,
# RFC 7493 2.2) and inside bigint.
MAX_CUSTOMER_ID = 2**53
# Ceilings of the domain's limits in Settings (max_items_per_order, max_quantity_per_line):
# the event schemas accept up to these, and Settings refuses a limit above them, so an order
# the API accepts is never refused by a step downstream.
MAX_ORDER_LINES = 1_000
MAX_LINE_QUANTITY = 1_000_000
# The deepest legal document is 4 levels (a structured CloudEvent -> data -> items -> a line);
# 32 leaves room for extension data and stays far below what breaks a reader (CPython's json
# and json.dumps recurse, ~1,000 levels less the server's own stack; BSON takes 100).
MAX_JSON_DEPTH = 32
# A dead letter is its record as it was on its topic (however large: the saga function refused
# an oversized one with 413) plus Knative's error extensions (knativeerrordata is truncated by
# the sender): no larger than the broker's record limit (Kafka's default message.max.bytes,
# which neither the local broker nor k8s/infra/kafka.yaml changes) and this margin. The
# re-drive function takes that much: refusing a letter would park it, not refuse it.
KAFKA_MAX_RECORD_BYTES = 1_048_588
DEAD_LETTER_MARGIN_BYTES = 64 * 1024
# Text a store takes: no NUL (PostgreSQL's text and jsonb refuse it) and no lone surrogate
# (not encodable as UTF-8: psycopg, BSON and Kafka's serializer raise). A JSON Schema pattern.
SAFE_TEXT_PATTERN = "^[^\\x00\\ud800-\\udfff]*$"
# Reasons quote input: at most this many characters of it go into a 400's detail (which
# becomes the dead letter's knativeerrordata).
MAX_REASON_CHARS = 300

# A JSON string (an unterminated one runs to the end: linear, no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_UNSAFE_CHAR = re.compile("[\x00\ud800-\udfff]")
# What in the bytes of a JSON text can decode to a NUL or a lone surrogate: a ``\u0000`` or
# ``\ud800``-``\udfff`` escape, a UTF-8-encoded surrogate (``json.loads`` reads bytes with
# ``surrogatepass``), or a NUL byte (also every UTF-16 or UTF-32 text, which json detects).
_UNSAFE_JSON_BYTES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00|\xed[\xa0-\xbf]")


def json_depth_exceeds(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects deeper than ``max_depth``, read
    from the bytes without parsing them (brackets inside strings do not count).

    Costs two ``bytes.count`` calls when the body has no more brackets than ``max_depth``
    (every event of the saga but large orders); otherwise one regex pass that drops the
    strings and one pass over the remaining brackets, all in C.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > max_depth


def unsafe_text(value: Any, pointer: str = "") -> str | None:
    """The JSON pointer of the first string (a value or a key) in decoded JSON ``value`` that
    no store takes (NUL, a lone surrogate), with why; None when every string is safe."""
    if isinstance(value, str):
        if _safe(value):
            return None
        what = "a NUL character" if "\x00" in value else "a lone surrogate"
        return f"{pointer or '(root)'}: contains {what}"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not _safe(key):
                return f"{pointer or '(root)'}: a key contains a NUL character or a lone surrogate"
            problem = unsafe_text(item, f"{pointer}/{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = unsafe_text(item, f"{pointer}/{index}")
            if problem:
                return problem
    return None


def json_text_may_be_unsafe(raw: bytes) -> bool:
    """Whether the JSON text ``raw`` may decode to a string no store takes (NUL, a lone
    surrogate): one scan of the bytes, in C. False means ``unsafe_text`` of the decoded
    document is None for certain; True (rare: also an escaped backslash before ``u0000``)
    means only that the walk must decide."""
    return _UNSAFE_JSON_BYTES.search(raw) is not None


def _safe(text: str) -> bool:
    if text.isascii():  # most strings: no surrogate possible
        return "\x00" not in text
    return _UNSAFE_CHAR.search(text) is None


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis says it was)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
