"""The order function: minimart's only public ingress (POST /orders, GET /orders/{id})."""

import time

import flask
import functions_framework

from minimart.bounds import API, install_bounds
from minimart.entrypoints import container_of, install_operational_routes
from minimart.ingress import HTTP_REQUESTS, HTTP_SECONDS, route
from minimart.observability import tracing

SERVICE = "order"
install_operational_routes(flask.current_app, SERVICE)
install_bounds(flask.current_app, SERVICE, API)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    c = container_of(flask.current_app)
    parent = tracing.extract(request.headers)
    with tracing.server_span(
        f"{request.method} order", parent, {"http.request.method": request.method}
    ) as span:
        name, response = route(request, c)
        span.update_name(f"{request.method} {name}")
        span.set_attribute("http.route", name)
        span.set_attribute("http.response.status_code", response.status_code)
    HTTP_REQUESTS.labels(request.method, name, str(response.status_code)).inc()
    HTTP_SECONDS.labels(request.method, name).observe(time.perf_counter() - started)
    return response
