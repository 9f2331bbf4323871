"""The re-drive function: dead letters of a transient failure back to their topic once their
sink is healthy again (fed by eventing/redrive-source.yaml, the dead-letter topic)."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from minimart.bounds import DEAD_LETTERS, install_bounds
from minimart.entrypoints import handle_dead_letter, install_operational_routes

SERVICE = "redrive"
install_operational_routes(flask.current_app, SERVICE)
install_bounds(flask.current_app, SERVICE, DEAD_LETTERS)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    handle_dead_letter(cloud_event)
