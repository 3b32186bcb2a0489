"""What operators and load balancers read: stats, health, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import ServicesDep, optional_admin

router = APIRouter()


@router.get("/ws/stats")
async def ws_stats(services: ServicesDep, request: Request) -> dict[str, Any]:
    """The origin document's three keys (cluster-wide), then counters, rates, latency and every node."""
    optional_admin(services, request, services.settings.stats_require_admin)
    hub = services.hub
    here = {"id": services.node.node_id, **services.node.info(), "heartbeat_age_s": 0.0}
    nodes, users, status = [here], hub.user_count, "operational"
    if services.broker.shared:
        try:
            others = [n for n in await services.broker.nodes() or [] if n.get("id") != here["id"]]
            nodes = sorted([here, *others], key=lambda n: n["id"])
            users = len(await services.broker.connected_users() or [])
        except Exception:
            status = "degraded"  # the cluster view is out of reach; this node's own figures follow
    return {
        "total_connections": sum(n.get("connections", 0) for n in nodes),
        "connected_users": users,
        "status": status,
        **services.stats.snapshot(),
        "broker": services.settings.broker_url.split("://", 1)[0],
        "node": here,
        "nodes": nodes,
        "caught_up_connections": services.node.filled_total,
        "asyncio_tasks": len(asyncio.all_tasks()),  # this node's; back to its idle figure when nothing leaks
        "sms": services.sms.snapshot() if services.sms else None,
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
