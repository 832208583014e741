"""Run the APIs with uvicorn: one server per distinct port, all in one event loop.

SIGTERM and SIGINT stop every server and then the tier (graceful: open requests finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from .app import build_apps
from .config import ServerConfig
from .service import ModelService

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve` (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve(config: ServerConfig, service: ModelService | None = None) -> None:
    service = service or ModelService(config)
    servers = [
        _Server(uvicorn.Config(app, host=config.host, port=port, log_level="warning", access_log=False,
                               lifespan="off", timeout_graceful_shutdown=10, http=_http_protocol()))
        for port, app in build_apps(service).items()
    ]

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_exit, servers, sig)

    log.info("serving model %s tier %s on %s: inference :%d, management :%d, metrics :%d",
             config.model_name, config.tier, config.host, config.port, config.management_port, config.metrics_port)
    loader = loop.create_task(service.start())
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        loader.cancel()
        await service.stop()


def _request_exit(servers: list[_Server], sig: int) -> None:
    log.info("received %s: stopping", signal.Signals(sig).name)
    for server in servers:
        server.should_exit = True


def _http_protocol() -> str:
    """Return uvicorn's C HTTP parser when httptools is installed, else its pure-Python one."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        log.warning("httptools is not installed: serving HTTP with the slower pure-Python h11 parser")
        return "h11"
    return "httptools"


def run_server(config: ServerConfig) -> int:
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: running on the slower default asyncio event loop")
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0
