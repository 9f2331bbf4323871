"""CloudEvents over HTTP, read without trusting the sender: a request's event as plain values.

The HTTP protocol binding (cloudevents/spec, http-protocol-binding.md): binary mode carries
the attributes as ``ce-*`` headers (percent-encoded, 3.1.3.2) and the data as the body;
structured mode (``application/cloudevents+json``) carries both in one JSON object. cloudevents
1.12 (what functions-framework pins) neither decodes header values nor accepts a request that
is not a valid event, so a reader that must take anything (the redrive function reads every
dead letter, valid or not) reads the request here instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

STRUCTURED_CONTENT_TYPE = "application/cloudevents"
# Members of a structured-mode event that are its data, not attributes.
STRUCTURED_DATA = ("data", "data_base64")


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
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return HttpEvent(readable=False, data=body)
    if not isinstance(document, dict):
        return HttpEvent(readable=False, data=body)
    attributes = {
        str(k): _attribute_text(v) for k, v in document.items() if k not in STRUCTURED_DATA
    }
    if isinstance(document.get("data_base64"), str):
        try:
            data = base64.b64decode(document["data_base64"], validate=True)
        except (binascii.Error, ValueError):
            return HttpEvent(attributes, body, readable=False)
    elif "data" in document:
        value = document["data"]
        data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    else:
        data = b""
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
