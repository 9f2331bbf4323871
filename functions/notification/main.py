"""The notification function: a CloudEvent from its KafkaSource -> the notification saga step."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from minimart.bounds import EVENTS, install_bounds
from minimart.entrypoints import handle_cloud_event, install_operational_routes

SERVICE = "notification"
install_operational_routes(flask.current_app, SERVICE)
install_bounds(flask.current_app, SERVICE, EVENTS)


@functions_framework.cloud_event
def handle(cloud_event: CloudEvent) -> None:
    handle_cloud_event(SERVICE, cloud_event)
