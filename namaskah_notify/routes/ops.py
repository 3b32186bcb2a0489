"""What operators and load balancers read: stats, health, readiness, Prometheus metrics."""

from __future__ import annotations

import os
import socket
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import ServicesDep, optional_admin

router = APIRouter()


@router.get("/ws/stats")
async def ws_stats(services: ServicesDep, request: Request) -> dict[str, Any]:
    """The origin document's three keys, then counters, rates, latency percentiles and nodes."""
    optional_admin(services, request, services.settings.stats_require_admin)
    hub = services.hub
    node = {
        "id": services.node_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "connections": hub.connection_count,
        "users": hub.user_count,
        "heartbeat_age_s": 0.0,
    }
    return {
        "total_connections": hub.connection_count,
        "connected_users": hub.user_count,
        "status": "operational",
        **services.stats.snapshot(),
        "broker": services.settings.broker_url.split("://", 1)[0],
        "nodes": [node],
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: the database and the broker both answer."""
    checks: dict[str, str] = {}
    for name, probe in (("database", services.store.ping), ("broker", services.broker.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(services: ServicesDep, request: Request) -> Response:
    """Prometheus text format."""
    optional_admin(services, request, services.settings.metrics_require_admin)
    return Response(services.stats.metrics_text(), media_type=CONTENT_TYPE_LATEST)
