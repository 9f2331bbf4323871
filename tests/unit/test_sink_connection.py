"""The dispatcher's HTTP client (minimart.local.delivery.SinkConnection) against a raw socket
server that behaves as gunicorn did after a 413: it answered before reading the body, kept the
connection, then read the rest of that body as the next request and reset the connection."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from minimart.local.delivery import SinkConnection

ANSWER_413 = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"
ANSWER_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # an RST, not a FIN


def _head_of(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class Sink:
    """Connection 1: answers 413 to its first request without reading the body, then resets
    at the next bytes. Every later connection: 200 to its request. ``reset_at_once``: resets
    the first connection as soon as a request starts (no answer at all)."""

    def __init__(self, reset_at_once: bool = False) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.reset_at_once = reset_at_once
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            head = _head_of(conn)
            if self.connections == 1:
                if self.reset_at_once:
                    _reset(conn)
                    continue
                conn.sendall(ANSWER_413)
                # It then takes the rest of the body in as the next request, and at the bytes
                # of the next request proper (sent once the 413 was read) gives up: a reset.
                rest = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                rest -= len(head.split(b"\r\n\r\n", 1)[1])
                while rest > 0:
                    rest -= len(conn.recv(min(rest, 65536)))
                conn.recv(65536)
                _reset(conn)
            else:
                conn.sendall(ANSWER_200)
                conn.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    made = Sink()
    yield made
    made.server.close()


def test_a_connection_the_sink_dropped_after_an_early_413_is_replaced_not_failed(
    sink: Sink,
) -> None:
    conn = SinkConnection(f"http://127.0.0.1:{sink.port}/", timeout_s=5)

    assert conn.post(b"x" * 10_000, {"ce-id": "1"})[0] == 413
    assert conn.post(b"{}", {"ce-id": "2"}) == (200, b"ok")  # once more, on a new connection
    assert sink.connections == 2


def test_a_new_connection_that_fails_is_this_attempts_failure() -> None:
    sink = Sink(reset_at_once=True)
    try:
        conn = SinkConnection(f"http://127.0.0.1:{sink.port}/", timeout_s=5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            conn.post(b"{}", {"ce-id": "1"})
        assert sink.connections == 1  # not tried again: the dispatcher's retry policy decides
    finally:
        sink.server.close()
