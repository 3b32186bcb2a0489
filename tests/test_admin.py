"""Administration against the real server: disconnecting a user everywhere and revoking their tokens."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import new_user, recv_json
from .test_cluster import cluster_env
from .test_websocket import expect_close


def disconnect(srv, user: str, revoke: bool | None = None, headers: dict | None = None) -> httpx.Response:
    body = None if revoke is None else {"revoke_tokens": revoke}
    return httpx.post(f"{srv.url}/api/admin/users/{user}/disconnect", json=body,
                      headers=headers or srv.admin_headers(), timeout=10)


async def test_revoke_closes_every_tab_and_refuses_older_tokens(make_server, tmp_path) -> None:
    """Revoking closes all of the user's tabs with 4401, refuses tokens issued before it (WebSocket and
    HTTP, also after a restart), and accepts a token issued after it."""
    data = tmp_path / "kept"
    srv = make_server(data_dir=data)
    user, bystander = new_user(), new_user()
    old = srv.token(user)
    await asyncio.sleep(1.1)  # iat has whole seconds: the revocation must come in a later second
    async with srv.ws(old) as one, srv.ws(old) as two, srv.ws(srv.token(bystander)) as other:
        for tab in (one, two, other):
            await recv_json(tab)
        answer = disconnect(srv, user, revoke=True)
        assert answer.status_code == 200 and answer.json()["revoked_before"].endswith("Z")
        for tab in (one, two):
            assert await expect_close(tab, timeout=5) == (4401, "token revoked")
        await other.send("ping")
        assert await asyncio.wait_for(other.recv(), 5) == "pong"
    async with srv.ws(old) as again:
        assert await expect_close(again) == (4401, "token revoked")
    listed = httpx.get(f"{srv.url}/api/notifications", headers={"Authorization": f"Bearer {old}"})
    assert listed.status_code == 401 and listed.json()["detail"] == "token revoked"
    async with srv.ws(srv.token(user)) as fresh:
        assert (await recv_json(fresh))["type"] == "connected"
    srv.stop()
    restarted = make_server(data_dir=data)
    async with restarted.ws(old) as after_restart:
        assert await expect_close(after_restart) == (4401, "token revoked")


async def test_disconnect_without_revoking_keeps_tokens_valid(server) -> None:
    """A plain disconnect closes the user's tabs with 1008; the same token may connect again."""
    user = new_user()
    token = server.token(user)
    async with server.ws(token) as tab:
        await recv_json(tab)
        answer = disconnect(server, user)
        assert answer.status_code == 200 and answer.json()["revoked_before"] is None
        assert await expect_close(tab, timeout=5) == (1008, "disconnected by an administrator")
    async with server.ws(token) as again:
        assert (await recv_json(again))["type"] == "connected"


def test_disconnect_needs_an_admin(server) -> None:
    """Users cannot disconnect anyone: 403, and 401 without a token."""
    user = new_user()
    assert disconnect(server, user, revoke=True, headers=server.user_headers(user)).status_code == 403
    assert httpx.post(f"{server.url}/api/admin/users/{user}/disconnect").status_code == 401


async def test_revoke_reaches_every_node(make_server, postgres, redis_server) -> None:
    """With two nodes, a revocation made on A closes the user's tab on B and B refuses the old token."""
    env = cluster_env(postgres, redis_server)
    a, b = make_server(**env), make_server(**env)
    user = new_user()
    old = a.token(user)
    await asyncio.sleep(1.1)
    async with a.ws(old) as on_a, b.ws(old) as on_b:
        await recv_json(on_a)
        await recv_json(on_b)
        assert disconnect(a, user, revoke=True).json()["other_nodes"] == "notified"
        for tab in (on_a, on_b):
            assert await expect_close(tab, timeout=5) == (4401, "token revoked")
    async with b.ws(old) as again:
        assert await expect_close(again) == (4401, "token revoked")
