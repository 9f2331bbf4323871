"""The re-drive function: dead letters of a transient failure back to their topic once their
sink is healthy again (fed by eventing/redrive-source.yaml, the dead-letter topic). An HTTP
function, not a CloudEvent one: it must read every letter, one that is no valid CloudEvent
too, instead of answering 400 before any code of ours runs."""

from typing import Any

import flask
import functions_framework

from minimart.bounds import DEAD_LETTERS, install_bounds
from minimart.entrypoints import handle_dead_letter, install_operational_routes

SERVICE = "redrive"
install_operational_routes(flask.current_app, SERVICE)
install_bounds(flask.current_app, SERVICE, DEAD_LETTERS)


@functions_framework.http
def handle(request: flask.Request) -> Any:
    return handle_dead_letter(request)
