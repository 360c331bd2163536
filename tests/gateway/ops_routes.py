"""The local API app with the operations routes (/metrics, /openapi.json) whether or not ROUTES lists them yet."""

from __future__ import annotations

from aiohttp import web

from customs_gateway.http.local import ROUTES, local_app, openapi_json
from customs_gateway.http.metrics import metrics
from customs_gateway.service.gateway import Gateway

OPS_ROUTES = (("GET", "/metrics", metrics, ()), ("GET", "/openapi.json", openapi_json, ()))


def ops_app(gw: Gateway) -> web.Application:
    """`local_app(gw)` plus whichever operations routes ROUTES does not list (added before start)."""
    app = local_app(gw)
    routed = {(m, p) for m, p, _, _ in ROUTES}
    for method, path, handler, _ in OPS_ROUTES:
        if (method, path) not in routed:
            app.router.add_route(method, path, handler)
    return app
