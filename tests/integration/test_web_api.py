"""The console's JSON API over a live server: refusals (401/403/404/409/422), filters, privacy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import squid_mesh as sm
from squid_mesh import web
from tests.conftest import MeshFactory
from tests.support.clock import FakeClock
from tests.support.databases import row_counts
from tests.support.web import TOKEN, LiveServer, console_workflows

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def drain(mesh: sm.Mesh) -> None:
    while mesh.execute_next(owner_id="w") or mesh.execute_next(owner_id="w", queue="reports"):
        pass


@pytest.fixture
def mesh(make_mesh: MeshFactory) -> sm.Mesh:
    return make_mesh(console_workflows())


@pytest.fixture
def api(mesh: sm.Mesh) -> Iterator[httpx.Client]:
    with LiveServer(web.app(mesh, token=TOKEN)) as url, httpx.Client(base_url=url) as client:
        yield client


def host_auth(request: Request) -> web.User | None:
    """A host's auth: the user named by a header its proxy sets (a stand-in for its session)."""
    name = request.headers.get("x-user")
    if not name:
        return None
    return web.User(name, can_act=name != "viewer", can_see_payloads=name == "admin")


@pytest.fixture
def host_api(mesh: sm.Mesh) -> Iterator[httpx.Client]:
    host = Starlette(routes=[Mount("/workflows", web.app(mesh, auth=host_auth))])
    with LiveServer(host) as url, httpx.Client(base_url=f"{url}/workflows") as client:
        yield client


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] and body["message"]
    return body


def test_every_endpoint_refuses_a_caller_without_credentials(
    api: httpx.Client, mesh: sm.Mesh
) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    for path in [
        "/api/runs",
        f"/api/runs/{run.id}",
        f"/api/runs/{run.id}/explain",
        f"/api/runs/{run.id}/graph",
        "/api/queues",
        "/api/schedules",
        "/api/session",
    ]:
        for headers in [{}, {"Authorization": "Bearer wrong-token-wrong-token"}]:
            response = api.get(path, headers=headers)
            assert error(response, 401)["code"] == "unauthenticated", path
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
    error(api.post(f"/api/runs/{run.id}/cancel"), 401)
    assert mesh.inspect_run(run.id).status == sm.RunStatus.RUNNING


def test_lists_filter_count_and_page_without_payloads(
    api: httpx.Client, mesh: sm.Mesh, clock: FakeClock
) -> None:
    refunds = []
    for i in range(3):
        refunds.append(
            mesh.start(
                "refund", {"ticket": f"T-{i}", "card": "4242-secret"}, idempotency_key=f"k{i}"
            )
        )
        clock.advance(1)
    mesh.start("fanout", {})
    drain(mesh)
    body = api.get("/api/runs", headers=BEARER).json()
    assert [r["workflow"] for r in body["runs"]] == ["fanout", "refund", "refund", "refund"]
    assert body["counts"] == {
        "running": 0,
        "paused": 3,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    text = api.get("/api/runs", headers=BEARER).text
    assert "4242-secret" not in text and "T-1" not in text and "k1" not in text
    only = api.get("/api/runs", params={"workflow": "fanout"}, headers=BEARER).json()
    assert [r["workflow"] for r in only["runs"]] == ["fanout"]
    assert only["counts"]["completed"] == 1 and only["counts"]["paused"] == 0
    queue = api.get("/api/runs", params={"queue": "reports"}, headers=BEARER).json()
    assert [r["queue"] for r in queue["runs"]] == ["reports"]
    paused = api.get("/api/runs", params={"status": "paused", "limit": 2}, headers=BEARER).json()
    assert [r["id"] for r in paused["runs"]] == [refunds[2].id, refunds[1].id]
    rest = api.get(
        "/api/runs", params={"status": "paused", "cursor": paused["next_cursor"]}, headers=BEARER
    ).json()
    assert [r["id"] for r in rest["runs"]] == [refunds[0].id] and rest["next_cursor"] is None


def test_bad_parameters_and_bodies_are_422_naming_the_field(
    api: httpx.Client, mesh: sm.Mesh, db_url: str
) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    assert error(api.get("/api/runs?limit=0", headers=BEARER), 422)["field"] == "limit"
    assert error(api.get("/api/runs?limit=x", headers=BEARER), 422)["field"] == "limit"
    assert error(api.get("/api/runs?status=lost", headers=BEARER), 422)["field"] == "status"
    assert error(api.get("/api/runs?cursor=%00", headers=BEARER), 422)["field"] == "cursor"
    assert error(api.get("/api/runs?sort=id", headers=BEARER), 422)["field"] == "sort"
    before = row_counts(db_url)
    approve = f"/api/runs/{run.id}/approve"
    assert error(api.post(approve, headers=BEARER, json={"coment": "x"}), 422)["field"] == "coment"
    assert error(api.post(approve, headers=BEARER, json={"comment": 3}), 422)["field"] == "comment"
    replay = f"/api/runs/{run.id}/replay"
    bad = api.post(replay, headers=BEARER, json={"allow_irreversible": "yes"})
    assert error(bad, 422)["field"] == "allow_irreversible"
    assert error(api.post(approve, headers=BEARER, content=b"[1]"), 422)["code"] == "invalid_body"
    assert error(api.post(approve, headers=BEARER, content=b"{no"), 422)["code"] == "invalid_body"
    assert row_counts(db_url) == before, "a refused request wrote nothing"
    assert mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED


def test_actions_answer_with_the_run_or_404_409(api: httpx.Client, mesh: sm.Mesh) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    done = mesh.start("fanout", {})
    drain(mesh)
    missing = "01a210b8-e475-77cb-856e-90a303eea023"
    assert error(api.get(f"/api/runs/{missing}", headers=BEARER), 404)["code"] == "run_not_found"
    gone = api.post(f"/api/runs/{missing}/cancel", headers=BEARER)
    assert error(gone, 404)["code"] == "run_not_found"
    assert error(api.get("/api/runs/nope", headers=BEARER), 422)["field"] == "run_id"
    assert (
        error(api.post(f"/api/runs/{run.id}/explode", headers=BEARER), 404)["code"] == "not_found"
    )
    assert error(api.get("/api/nothing/here", headers=BEARER), 404)["code"] == "not_found"
    assert (
        error(api.post(f"/api/runs/{run.id}/resume", headers=BEARER), 409)["code"] == "wrong_gate"
    )
    approved = api.post(f"/api/runs/{run.id}/approve", headers=BEARER, json={"comment": "fine"})
    assert approved.status_code == 200 and approved.json()["id"] == run.id
    again = api.post(f"/api/runs/{run.id}/approve", headers=BEARER)
    assert error(again, 409)["code"] == "not_paused"
    drain(mesh)
    snap = mesh.inspect_run(run.id)
    assert snap.status == sm.RunStatus.COMPLETED
    assert [(c.command, c.actor, c.comment) for c in snap.commands][-1] == (
        "approve",
        "token",
        "fine",
    )
    assert (
        error(api.post(f"/api/runs/{done.id}/cancel", headers=BEARER), 409)["code"]
        == "run_finished"
    )
    replay = api.post(f"/api/runs/{done.id}/replay", headers=BEARER, json={"idempotency_key": "r1"})
    assert replay.status_code == 201 and replay.json()["replayed_from"] == done.id
    live = mesh.start("slow", {})
    cancelled = api.post(f"/api/runs/{live.id}/cancel", headers=BEARER, json={"reason": "test"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_explain_and_graph_describe_the_run(api: httpx.Client, mesh: sm.Mesh) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    why = api.get(f"/api/runs/{run.id}/explain", headers=BEARER).json()
    assert why["reason"] == "waiting_for_approval" and "approve" in why["next_actions"]
    graph = api.get(f"/api/runs/{run.id}/graph", headers=BEARER).json()
    nodes = {n["id"]: n["status"] for n in graph["nodes"]}
    assert nodes["prepare"] == "completed" and nodes["manager_ok"] == "paused"
    assert graph["dot"].startswith("digraph") and graph["mermaid"].startswith("flowchart")


def test_csrf_permissions_and_payload_privacy_under_host_auth(
    host_api: httpx.Client, mesh: sm.Mesh
) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242-secret"})
    drain(mesh)
    ops, admin, viewer = {"x-user": "ops"}, {"x-user": "admin"}, {"x-user": "viewer"}
    assert error(host_api.get("/api/runs"), 401)["code"] == "unauthenticated"
    detail = host_api.get(f"/api/runs/{run.id}", headers=ops)
    assert detail.json()["payload"] == "hidden" and "4242-secret" not in detail.text
    assert host_api.get(f"/api/runs/{run.id}", headers=admin).json()["payload"]["card"] == (
        "4242-secret"
    )
    approve = f"/api/runs/{run.id}/approve"
    assert error(host_api.post(approve, headers=ops), 403)["code"] == "csrf_failed"
    wrong = {**ops, "x-csrf-token": host_api.get("/api/session", headers=admin).json()["csrf"]}
    assert error(host_api.post(approve, headers=wrong), 403)["code"] == "csrf_failed"
    session = host_api.get("/api/session", headers=viewer).json()
    refused = host_api.post(approve, headers={**viewer, "x-csrf-token": session["csrf"]})
    assert error(refused, 403)["code"] == "forbidden"
    assert mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED
    csrf = host_api.get("/api/session", headers=ops).json()["csrf"]
    ok = host_api.post(approve, headers={**ops, "x-csrf-token": csrf}, json={"comment": "ok"})
    assert ok.status_code == 200, ok.text
    assert mesh.inspect_run(run.id).commands[-1].actor == "ops"


def test_a_read_only_console_refuses_every_action(mesh: sm.Mesh) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    with LiveServer(web.app(mesh, token=TOKEN, read_only=True)) as url:
        for action in ("approve", "reject", "cancel"):
            response = httpx.post(f"{url}/api/runs/{run.id}/{action}", headers=BEARER)
            assert error(response, 403)["code"] == "read_only"
        assert httpx.get(f"{url}/api/session", headers=BEARER).json()["read_only"] is True
    assert mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED


def test_queues_and_schedules(api: httpx.Client, mesh: sm.Mesh) -> None:
    mesh.start("fanout", {})
    mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    queues = {q["queue"]: q for q in api.get("/api/queues", headers=BEARER).json()["queues"]}
    assert queues["reports"]["visible"] == 1 and queues["default"]["visible"] == 1
    assert api.get("/api/queues", headers=BEARER).json()["workers"] == []
    schedules = api.get("/api/schedules", headers=BEARER).json()["schedules"]
    assert [(s["workflow"], s["trigger"], s["expression"]) for s in schedules] == [
        ("nightly", "night", "0 2 * * *")
    ]
    assert schedules[0]["next_fire"].endswith("T02:00:00+00:00")


def test_the_openapi_document_describes_every_endpoint(api: httpx.Client) -> None:
    doc = api.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    for path in [
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/explain",
        "/api/runs/{run_id}/graph",
        "/api/queues",
        "/api/schedules",
        "/api/session",
    ]:
        assert path in paths
    for action in ("approve", "reject", "resume", "cancel", "replay"):
        responses = doc["paths"][f"/api/runs/{{run_id}}/{action}"]["post"]["responses"]
        assert {"401", "403", "404", "409", "422"} <= set(responses)


def test_console_options_are_checked(mesh: sm.Mesh) -> None:
    with pytest.raises(sm.InvalidOptionError, match="auth"):
        web.app(mesh)
    with pytest.raises(sm.InvalidOptionError, match="auth"):
        web.app(mesh, auth=host_auth, token=TOKEN)
    with pytest.raises(sm.InvalidOptionError, match="token"):
        web.app(mesh, token="short")
    with pytest.raises(sm.InvalidOptionError, match="mesh"):
        web.app("sqlite:///x.db", token=TOKEN)  # type: ignore[arg-type]


def test_a_console_built_before_its_mesh_answers_503_until_the_mesh_is_there(
    mesh: sm.Mesh,
) -> None:
    holder: dict[str, sm.Mesh | None] = {"mesh": None}  # a host's app.state before its lifespan
    run = mesh.start("refund", {"ticket": "T-2", "card": "4242"})
    with LiveServer(web.app(lambda: holder["mesh"], token=TOKEN)) as url:
        early = httpx.get(f"{url}/api/runs/{run.id}", headers=BEARER)
        assert error(early, 503)["code"] == "mesh_unavailable"
        assert httpx.get(f"{url}/", headers=BEARER).status_code == 503
        holder["mesh"] = mesh
        ready = httpx.get(f"{url}/api/runs/{run.id}", headers=BEARER)
        assert ready.status_code == 200 and ready.json()["id"] == run.id
        holder["mesh"] = "sqlite:///x.db"  # type: ignore[assignment]  # a host's mistake
        wrong = httpx.get(f"{url}/api/runs/{run.id}", headers=BEARER)
        assert error(wrong, 500)["code"] == "internal_error"  # not "not connected yet"


def test_pages_follow_the_mount_path_escape_data_and_show_only_allowed_actions(
    host_api: httpx.Client, mesh: sm.Mesh
) -> None:
    run = mesh.start("refund", {"ticket": "<script>alert(1)</script>", "card": "4242-secret"})
    drain(mesh)
    admin, viewer, ops = {"x-user": "admin"}, {"x-user": "viewer"}, {"x-user": "ops"}
    listing = host_api.get("/", headers=ops)
    assert listing.status_code == 200
    assert f'href="/workflows/runs/{run.id}"' in listing.text
    assert 'href="/workflows/static/console.css"' in listing.text
    assert host_api.get("/static/console.js").status_code == 200
    assert "default-src 'self'" in listing.headers["content-security-policy"]
    page = host_api.get(f"/runs/{run.id}", headers=admin)
    assert "<script>alert(1)</script>" not in page.text
    assert "\\u003cscript\\u003ealert(1)" in page.text  # shown (JSON-escaped), never run
    assert f'action="/workflows/runs/{run.id}/approve"' in page.text
    assert 'data-node="manager_ok"' in page.text
    # The gate step's attempt completed, and the step table says the run waits there.
    waiting = '<span class="status status-paused">waiting for approval</span>'
    assert page.text.count(waiting) == 1
    hidden = host_api.get(f"/runs/{run.id}", headers=viewer).text
    assert "4242-secret" not in hidden and "alert(1)" not in hidden
    assert "/approve" not in hidden, "no action is offered to a user who may not act"
    assert host_api.get("/", headers={}).status_code == 401
    # A refused action renders the run again with the reason and the refusal's status.
    csrf = host_api.get("/api/session", headers=ops).json()["csrf"]
    resumed = host_api.post(
        f"/runs/{run.id}/resume", headers=ops, data={"csrf": csrf}, follow_redirects=False
    )
    assert resumed.status_code == 409 and "use approve or reject" in resumed.text
    approved = host_api.post(
        f"/runs/{run.id}/approve",
        headers=ops,
        data={"csrf": csrf, "comment": "ok"},
        follow_redirects=False,
    )
    assert approved.status_code == 303
    assert approved.headers["location"] == f"/workflows/runs/{run.id}?done=approve"
    assert waiting not in host_api.get(f"/runs/{run.id}", headers=admin).text
    assert host_api.get("/nowhere", headers=ops).status_code == 404


def test_a_read_only_console_shows_no_action(mesh: sm.Mesh) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    with LiveServer(web.app(mesh, token=TOKEN, read_only=True)) as url:
        page = httpx.get(f"{url}/runs/{run.id}", headers=BEARER)
    assert page.status_code == 200 and "read-only" in page.text
    assert "/approve" not in page.text and "Cancel run" not in page.text


def sign_in(client: httpx.Client, next_path: str = "/") -> httpx.Response:
    return client.post("/login", data={"token": TOKEN, "next": next_path}, follow_redirects=False)


def test_sign_in_sets_a_strict_cookie_redirects_only_inside_and_signs_out(mesh: sm.Mesh) -> None:
    host = Starlette(routes=[Mount("/ops", web.app(mesh, token=TOKEN))])
    with LiveServer(host) as url, httpx.Client(base_url=f"{url}/ops") as client:
        assert client.post("/login", data={"token": "wrong"}).status_code == 401
        assert "squid_mesh_session" not in client.cookies
        for evil in ["https://evil.example/", "//evil.example/", "/\\evil.example", "/elsewhere"]:
            response = sign_in(client, evil)
            assert response.status_code == 303 and response.headers["location"] == "/ops/", evil
        response = sign_in(client, "/ops/queues")
        assert response.headers["location"] == "/ops/queues"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ops/" in cookie
        assert TOKEN not in response.headers["set-cookie"]
        assert client.get("/queues").status_code == 200
        csrf = client.get("/api/session").json()["csrf"]
        assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
        out = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        client.cookies.clear()
        assert client.get("/queues", follow_redirects=False).status_code == 303


def test_read_only_refuses_browser_sessions_too_for_every_action(mesh: sm.Mesh) -> None:
    paused = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    done = mesh.start("fanout", {})
    drain(mesh)
    with (
        LiveServer(web.app(mesh, token=TOKEN, read_only=True)) as url,
        httpx.Client(base_url=url) as client,
    ):
        sign_in(client)
        csrf = client.get("/api/session").json()["csrf"]
        for run, action in [
            (paused, "approve"),
            (paused, "reject"),
            (paused, "resume"),
            (paused, "cancel"),
            (done, "replay"),
        ]:
            api = client.post(f"/api/runs/{run.id}/{action}", headers={"x-csrf-token": csrf})
            assert error(api, 403)["code"] == "read_only", action
            page = client.post(f"/runs/{run.id}/{action}", data={"csrf": csrf})
            assert page.status_code == 403 and "read-only" in page.text, action
    assert mesh.inspect_run(paused.id).status == sm.RunStatus.PAUSED
    assert mesh.inspect_run(done.id).replays == ()


def test_a_refused_action_page_does_not_reload_itself(
    host_api: httpx.Client, mesh: sm.Mesh
) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    ops = {"x-user": "ops"}
    csrf = host_api.get("/api/session", headers=ops).json()["csrf"]
    refused = host_api.post(f"/runs/{run.id}/resume", headers=ops, data={"csrf": csrf})
    assert refused.status_code == 409
    assert "data-refresh" not in refused.text, "a reload would post the action again"
    assert "data-refresh" in host_api.get(f"/runs/{run.id}", headers=ops).text


def test_large_and_deeply_nested_bodies_are_refused_as_json(
    api: httpx.Client, mesh: sm.Mesh
) -> None:
    run = mesh.start("refund", {"ticket": "T-1", "card": "4242"})
    drain(mesh)
    approve = f"/api/runs/{run.id}/approve"
    big = api.post(approve, headers=BEARER, content=b" " * 70_000)
    assert error(big, 413)["code"] == "body_too_large"
    deep = api.post(approve, headers=BEARER, content=b"[" * 50_000)
    assert error(deep, 422)["code"] in ("invalid_body", "body_too_large")
    nested = api.post(approve, headers=BEARER, content=b"[" * 20_000)
    assert error(nested, 422)["code"] == "invalid_body"
    assert mesh.inspect_run(run.id).status == sm.RunStatus.PAUSED
    assert api.get("/apiary", headers=BEARER).headers["content-type"].startswith("text/html")


def test_async_and_failing_host_auth(mesh: sm.Mesh) -> None:
    async def async_auth(request: Request) -> web.User | None:
        return web.User("async-user") if request.headers.get("x-user") else None

    def broken_auth(request: Request) -> web.User | None:
        raise RuntimeError("the session store is down")

    with LiveServer(web.app(mesh, auth=async_auth)) as url:
        assert httpx.get(f"{url}/api/session", headers={"x-user": "a"}).json()["user"]["name"] == (
            "async-user"
        )
        assert httpx.get(f"{url}/api/session").status_code == 401
    with LiveServer(web.app(mesh, auth=broken_auth)) as url:
        response = httpx.get(f"{url}/api/runs")
        assert error(response, 500)["code"] == "internal_error"
        assert "session store" not in response.text
        assert httpx.get(f"{url}/").status_code == 500
