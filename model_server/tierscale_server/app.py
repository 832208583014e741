"""Starlette routes of the three APIs: inference, management and metrics.

Inference (TorchServe-style): ``GET /ping``, ``POST /predictions/{model}``, ``POST /feedback``.
Management: ``GET /models``, ``GET /models/{model}``, ``PUT /models/{model}?min_worker=N``.
Metrics: ``GET /metrics`` in the Prometheus text format.
Errors are JSON ``{"code": <status>, "type": <reason phrase>, "message": <what failed and why>}``.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .service import ApiError, ModelService

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "type": HTTPStatus(status).phrase, "message": message}, status_code=status)


async def read_json_object(request: Request, limit: int) -> dict:
    """Read the body (at most ``limit`` bytes) and parse it as a UTF-8 JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"request body is not valid UTF-8: invalid byte at offset {error.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON: {error.msg} at line {error.lineno} "
                            f"column {error.colno}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(value).__name__}")
    return value


class Routes:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def ping(self, request: Request) -> JSONResponse:
        healthy, reason = await self.service.health()
        body = {"status": "Healthy" if healthy else "Unhealthy", "tier": self.service.config.tier, "reason": reason}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def predictions(self, request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            self.service.check_model(request.path_params["model"])
            body = await read_json_object(request, self.service.config.max_body_bytes)
            query = self.service.parse_query(body)
            result = await self.service.predict(query)
            status = 200
            return JSONResponse(result)
        except ApiError as error:
            status = error.status
            return error_response(error.status, error.message)
        finally:
            # Latency is observed for served rankings only, so fast rejections cannot lower p95.
            duration = time.perf_counter() - started if status == 200 else None
            self.service.metrics.observe_request(status, duration)

    async def feedback(self, request: Request) -> Response:
        status = 500
        try:
            if self.service.status != "ready":
                raise ApiError(503, f"tier {self.service.config.tier} is {self.service.status}")
            body = await read_json_object(request, self.service.config.max_body_bytes)
            result = self.service.record_click(body)
            status = 200
            return JSONResponse(result)
        except ApiError as error:
            status = error.status
            return error_response(error.status, error.message)
        finally:
            self.service.metrics.feedback.labels(**self.service.metrics.labels, code=str(status)).inc()

    async def list_models(self, request: Request) -> JSONResponse:
        config = self.service.config
        return JSONResponse({"models": [{"modelName": config.model_name, "tier": config.tier,
                                         "status": self.service.status}]})

    async def describe_model(self, request: Request) -> JSONResponse:
        model = request.path_params["model"]
        if model != self.service.config.model_name:
            return error_response(404, f"model {model!r} not found; this server serves "
                                       f"{self.service.config.model_name!r}")
        return JSONResponse(self.service.describe())

    async def scale_model(self, request: Request) -> JSONResponse:
        model = request.path_params["model"]
        if model != self.service.config.model_name:
            return error_response(404, f"model {model!r} not found; this server serves "
                                       f"{self.service.config.model_name!r}")
        if self.service.status != "ready":
            return error_response(503, f"tier {self.service.config.tier} is {self.service.status}")
        raw = request.query_params.get("min_worker")
        if raw is None:
            return error_response(400, "missing query parameter min_worker (the number of scoring workers)")
        try:
            count = int(raw)
        except ValueError:
            return error_response(400, f"min_worker must be an integer, got {raw!r}")
        if not 0 <= count <= 64:
            return error_response(400, f"min_worker {count} is outside 0..64")
        self.service.set_workers(count)
        return JSONResponse({"status": f"workers of {model} set to {count}"}, status_code=202)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def inference_routes(routes: Routes) -> list[Route]:
    return [
        Route("/ping", routes.ping, methods=["GET"]),
        Route("/predictions/{model}", routes.predictions, methods=["POST"]),
        Route("/feedback", routes.feedback, methods=["POST"]),
    ]


def management_routes(routes: Routes) -> list[Route]:
    return [
        Route("/models", routes.list_models, methods=["GET"]),
        Route("/models/{model}", routes.describe_model, methods=["GET"]),
        Route("/models/{model}", routes.scale_model, methods=["PUT"]),
    ]


def metrics_routes(routes: Routes) -> list[Route]:
    return [Route("/metrics", routes.metrics, methods=["GET"])]


def build_apps(service: ModelService) -> dict[int, Starlette]:
    """Return one Starlette app per port; APIs configured on the same port share one app."""
    routes = Routes(service)
    config = service.config
    by_port: dict[int, list[Route]] = {}
    by_port.setdefault(config.port, []).extend(inference_routes(routes))
    by_port.setdefault(config.management_port, []).extend(management_routes(routes))
    by_port.setdefault(config.metrics_port, []).extend(metrics_routes(routes))
    handlers = {HTTPException: _http_exception}
    return {port: Starlette(routes=port_routes, exception_handlers=handlers) for port, port_routes in by_port.items()}


async def _http_exception(request: Request, error: HTTPException) -> JSONResponse:
    """Return errors for unknown paths and wrong methods in the JSON shape of the API errors."""
    if error.status_code == 404:
        message = f"path {request.url.path} not found"
    elif error.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return error_response(error.status_code, message)
