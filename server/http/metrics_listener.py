"""The metrics listener (``CERO_METRICS_ADDRESS``): a second, tiny HTTP server in the same
process that answers only ``GET /metrics``, for Prometheus.

Operators expect an exporter on its own port, bound where only the scraper reaches it
(loopback by default in the examples); the API's public listener then gives anonymous
clients no metrics (:func:`server.ops.metrics.metrics_view`). It shares the app's registry,
runs none of the API's middlewares and is not counted in ``cero_http_responses``.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from server.http.security_headers import hide_server
from server.ops.metrics import METRICS, Metrics, exposition

log = structlog.get_logger(__name__)


async def _scrape(request: web.Request) -> web.Response:
    return exposition(request.app[METRICS])


def metrics_app(metrics: Metrics) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _scrape)
    app.on_response_prepare.append(hide_server)
    return app


async def start_metrics_listener(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve ``metrics`` on ``host:port``; raises ``OSError`` when it cannot listen. Stop it
    with ``runner.cleanup()``."""
    runner = web.AppRunner(metrics_app(metrics), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        raise
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics_listening", url=f"http://{shown}:{port}/metrics")
    return runner
