"""CloudEvents HTTP binary mode: header values percent-encoded by the dispatcher and decoded by
the functions, as the HTTP protocol binding (3.1.3.2) requires."""

from __future__ import annotations

import pytest
from cloudevents.http import CloudEvent, from_http

from minimart.binding import OutgoingEvent, header_text
from minimart.entrypoints import decode_binary_attributes

VALUES = [
    "/minimart/inventory",
    "/a b",
    "50% off",
    'say "hi"',
    "caf\u00e9 \u20ac",
    "tab\there",
    "",
    "already%20encoded-looking",
]


def outgoing(**attributes: str) -> OutgoingEvent:
    return OutgoingEvent(
        {"specversion": "1.0", "id": "e-1", "type": "t", **attributes},
        "application/json",
        {},
        None,
        b"{}",
    )


def test_space_quote_percent_and_non_ascii_are_percent_encoded() -> None:
    headers = outgoing(source="/a b", note='50% "off" \u20ac\n').http_headers()

    assert headers["ce-source"] == "/a%20b"
    assert headers["ce-note"] == "50%25%20%22off%22%20%E2%82%AC%0A"


def test_printable_ascii_other_than_those_is_sent_as_is() -> None:
    value = "/minimart/x?a=b&c=d+e:f;g,h!~*'()[]{}<>@#$^`|\\"
    assert outgoing(source=value).http_headers()["ce-source"] == value


@pytest.mark.parametrize("value", VALUES)
def test_what_the_dispatcher_encodes_the_function_decodes(value: str) -> None:
    headers = outgoing(source=value).http_headers()
    event = from_http(headers, b"{}")
    assert event["source"] != value or "%" not in headers["ce-source"]  # 1.12 does not decode

    decode_binary_attributes(event, headers["Content-Type"])

    assert event["source"] == value


def test_an_older_double_quoted_value_is_accepted() -> None:
    assert header_text('"/a b"') == "/a b"


def test_structured_mode_attributes_are_not_decoded() -> None:
    event = CloudEvent({"type": "t", "source": "/a%20b", "id": "1"}, {})
    decode_binary_attributes(event, "application/cloudevents+json")
    assert event["source"] == "/a%20b"
