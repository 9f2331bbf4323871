"""The order function: minimart's only public ingress (POST /orders, GET /orders/{id})."""

import time

import flask
import functions_framework

from minimart.bootstrap import container
from minimart.entrypoints import install_operational_routes
from minimart.ingress import HTTP_REQUESTS, HTTP_SECONDS, route

SERVICE = "order"
install_operational_routes(flask.current_app, SERVICE)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    name, response = route(request, container())
    HTTP_REQUESTS.labels(request.method, name, str(response.status_code)).inc()
    HTTP_SECONDS.labels(request.method, name).observe(time.perf_counter() - started)
    return response
