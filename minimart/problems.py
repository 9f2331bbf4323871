"""RFC 9457 problem details: how minimart's HTTP answers explain an error."""

from __future__ import annotations

import json
from typing import Any

import flask

PROBLEM_BASE = "https://minimart.dev/problems/"


def problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> flask.Response:
    body = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
    body.update(extra)
    response = flask.Response(json.dumps(body), status=status)
    response.headers["Content-Type"] = "application/problem+json"
    return response
