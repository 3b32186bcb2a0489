"""What operators and load balancers read: stats, health, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .. import openapi as api
from ..brokers import Broker
from ..deps import ServicesDep, optional_admin

router = APIRouter(tags=["operations"])


@router.get("/ws/stats", response_model=api.Stats,
            responses=api.errors((401, "With `NOTIFY_STATS_PUBLIC=false`: no token, or not a valid one."),
                                 (403, "With `NOTIFY_STATS_PUBLIC=false`: not an admin token.")))
async def ws_stats(services: ServicesDep, request: Request) -> dict[str, Any]:
    """The origin document's three keys (cluster-wide), then counters, rates, latency and every node.

    Cheap at any size: the live nodes' heartbeats (one small hash each) and their own counters; users
    with tabs on two nodes count once on each. With the broker down, ``status`` is ``degraded`` and the
    figures are this node's."""
    settings = services.settings
    optional_admin(services, request, not settings.stats_public or settings.stats_require_admin)
    broker = services.broker
    here = {"id": services.node.node_id, **services.node.info(), "heartbeat_age_s": 0.0}
    nodes = [here]
    if broker.shared and broker.up:
        with contextlib.suppress(Exception):  # the broker marks itself down; this node's figures follow
            others = [n for n in await broker.nodes() or [] if n.get("id") != here["id"]]
            nodes = sorted([here, *others], key=lambda n: n["id"])
    return {
        "total_connections": sum(n.get("connections", 0) for n in nodes),
        "connected_users": sum(n.get("users", 0) for n in nodes),
        "status": "operational" if broker.up else "degraded",
        **services.stats.snapshot(),
        "broker": services.settings.broker_url.split("://", 1)[0],
        "broker_state": _broker_state(broker),
        "node": here,
        "nodes": nodes,
        "caught_up_connections": services.node.filled_total,
        "asyncio_tasks": len(asyncio.all_tasks()),  # this node's; back to its idle figure when nothing leaks
        "sms": services.sms.snapshot() if services.sms else None,
    }


def _broker_state(broker: Broker) -> dict[str, Any]:
    down_for = round(time.time() - broker.down_since, 1) if broker.down_since is not None else None
    return {"up": broker.up, "down_for_s": down_for}


@router.get("/healthz", response_model=api.Health, responses=api.errors())
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=api.Readiness,
            responses={503: {"description": "Not ready: the database does not answer.", "model": api.Readiness},
                       **api.errors()})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness follows the database: while it answers, this node stores, pushes to its own connections
    and catches them up, so a load balancer should keep it. A broker outage only degrades fan-out between
    nodes (which the store catches up): it is reported, never fatal."""
    checks: dict[str, str] = {}
    try:
        await services.store.ping()
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "down"  # an open endpoint: what failed, and in which library, is not said
    broker = services.broker
    checks["broker"] = "ok" if broker.up else "degraded: other nodes catch up from the store"
    ready = checks["database"] == "ok"
    return JSONResponse({"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text format.",
                             "content": {"text/plain": {"schema": {"type": "string"}, "example":
                                 "# TYPE notify_connections gauge\nnotify_connections 5.0\n"}}},
                       **api.errors((401, "With `NOTIFY_METRICS_REQUIRE_ADMIN=true`: no token, or not a valid one."),
                                    (403, "With `NOTIFY_METRICS_REQUIRE_ADMIN=true`: not an admin token."))})
async def metrics(services: ServicesDep, request: Request) -> Response:
    """Prometheus text format."""
    optional_admin(services, request, services.settings.metrics_require_admin)
    return Response(services.stats.metrics_text(), media_type=CONTENT_TYPE_LATEST)
