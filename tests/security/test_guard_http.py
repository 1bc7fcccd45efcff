"""The web process's front door over plain HTTP against a real ``flowjobs web``: the hosts it
serves, the origins it takes state changes from, the headers on every answer and the bounds of a
request's head."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.security.conftest import StartWeb, Web

pytestmark = pytest.mark.slow

FLOW = "sec-guard"
FLOWS = {
    FLOW: {"steps": {"a": {"type": "Noop"}}},
    "sec-guard-hook": {
        "triggers": {
            "hook": {"type": "Webhook", "inputs": {"webhookSlug": "sec-guard-hook", "webhookAuth": "none"}}
        },
        "steps": {"a": {"type": "Noop"}},
    },
}
TOKEN = "t0ken-for-the-guard"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _port(web: Web) -> int:
    return int(web.base.rsplit(":", 1)[1])


def _enabled(web: Web) -> bool:
    return web.client.store.flows.flow_enabled(web.client.flows.get(FLOW).id)


def test_only_loopback_hosts_are_served_by_default(start_web: StartWeb) -> None:
    web = start_web(FLOWS, worker=False)
    port = _port(web)
    with web.http() as http:
        refused = http.get("/flows/api/health", headers={"Host": "attacker.example"})
        assert refused.status_code == 400
        assert refused.json()["error"] == "HostNotAllowed" and "attacker.example" in refused.json()["detail"]
        # A rebound name reaches no route, open or not.
        assert http.get("/flows/api/flows", headers={"Host": f"attacker.example:{port}"}).status_code == 400
        assert http.get("/flows/", headers={"Host": "attacker.example"}).status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert http.get("/flows/api/health", headers={"Host": host}).status_code == 200, host
        assert http.get("/flows/api/health", headers={"Host": "localhost:nope"}).status_code == 400


def test_allowed_hosts_setting_replaces_the_default(start_web: StartWeb) -> None:
    env = {"FLOWJOBS_WEB_ALLOWED_HOSTS": "flows.example, *.ops.example"}
    web = start_web(FLOWS, env=env, worker=False, health_headers={"Host": "flows.example"})
    with web.http() as http:
        for host in ("flows.example", "a.ops.example:443"):
            assert http.get("/flows/api/health", headers={"Host": host}).status_code == 200, host
        for host in ("127.0.0.1", "ops.example", "evilops.example"):
            assert http.get("/flows/api/health", headers={"Host": host}).status_code == 400, host


def test_state_changes_from_other_origins_are_refused(start_web: StartWeb) -> None:
    web = start_web(FLOWS, env={"FLOWJOBS_WEB_ALLOWED_ORIGINS": "https://ops.example"}, worker=False)
    disable = f"/flows/api/flows/{FLOW}/disable"
    ui_disable = f"/flows/flows/{web.client.flows.get(FLOW).id}/disable"
    with web.http() as http:
        for headers in (
            {"Origin": "http://attacker.example"},
            {"Origin": f"http://attacker.example:{_port(web)}"},
            {"Origin": "null"},
            {"Origin": "http://"},
            {"Origin": f"{web.base}/path"},
            {"Origin": "https://ops.example.attacker.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": web.base},
        ):
            for path in (disable, ui_disable, f"/rq/requeue/{web.space.settings.queue}"):
                answer = http.post(path, headers=headers)
                assert answer.status_code == 403, (headers, path)
                assert answer.json()["error"] == "CrossSiteRequest" and answer.json()["detail"]
        for method in ("PUT", "PATCH", "DELETE"):
            assert http.request(method, disable, headers={"Origin": "null"}).status_code == 403
        # The flows UI's forms and rq-dashboard are posted by browsers only, which send Origin.
        assert http.post(ui_disable).status_code == 403
        assert http.post("/rq/job/x/requeue").status_code == 403
        assert _enabled(web)

        # The process's own origin and the allowed one.
        assert (
            http.post(ui_disable, headers={"Origin": web.base, "Sec-Fetch-Site": "same-origin"}).status_code
            == 303
        )
        assert not _enabled(web)
        assert (
            http.post(
                f"/flows/api/flows/{FLOW}/enable", headers={"Origin": "https://ops.example"}
            ).status_code
            == 200
        )
        assert _enabled(web)
        # Webhook senders are servers: Origin says nothing about them.
        hook = http.post(
            "/flows/api/webhook/sec-guard-hook", json={}, headers={"Origin": "http://sender.example"}
        )
        assert hook.status_code == 202, hook.text


def test_scripts_use_the_api_without_origin_and_with_the_token(start_web: StartWeb) -> None:
    web = start_web(FLOWS, env={"FLOWJOBS_WEB_TOKEN": TOKEN}, worker=False)
    with web.http() as http:
        assert http.post(f"/flows/api/flows/{FLOW}/disable").status_code == 401
        assert http.post(f"/flows/api/flows/{FLOW}/disable", headers=BEARER).status_code == 200
        assert not _enabled(web)
        run = http.post(f"/flows/api/flows/{FLOW}/trigger", headers=BEARER, json={})
        assert run.status_code in (202, 409), run.text  # refused by the disabled flow, not by the guard
        assert http.post(f"/flows/api/flows/{FLOW}/enable", headers=BEARER).status_code == 200
        assert http.post(f"/flows/api/flows/{FLOW}/trigger", headers=BEARER, json={}).status_code == 202


def test_every_answer_carries_the_security_headers(start_web: StartWeb) -> None:
    web = start_web(FLOWS, env={"FLOWJOBS_WEB_TOKEN": TOKEN}, worker=False)
    with web.http(headers=BEARER) as http:
        answers = {
            "api": http.get("/flows/api/flows"),
            "ui": http.get("/flows/"),
            "static": http.get("/flows/static/flows.css"),
            "rq": http.get("/rq/"),
            "rq static": http.get("/rq/static/css/main.css"),
            "health": http.get("/flows/api/health"),
            "not found": http.get("/nowhere"),
            "unauthorized": http.get("/flows/api/flows", headers={"Authorization": "Bearer wrong"}),
            "refused host": http.get("/flows/api/flows", headers={"Host": "attacker.example"}),
        }
    for name, answer in answers.items():
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert answer.headers.get("x-frame-options") == "DENY", name
        assert answer.headers.get("referrer-policy") == "same-origin", name
    assert answers["ui"].status_code == 200 and answers["static"].status_code == 200
    # A route's own policy is kept.
    assert "frame-ancestors 'none'" in answers["ui"].headers["content-security-policy"]


def _raw(web: Web, head: bytes) -> bytes:
    """Send a raw request head; the server's whole answer (it closes the connection)."""
    with socket.create_connection(("127.0.0.1", _port(web)), timeout=15) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_heads_are_bounded_at_the_server(start_web: StartWeb) -> None:
    web = start_web(FLOWS, worker=False)
    with web.http() as http:
        big = http.get("/flows/api/health", headers={"X-Big": "a" * (64 * 1024 + 1)})
        assert big.status_code == 431 and "16384 bytes" in big.json()["detail"]
        many = http.get("/flows/api/health", headers={f"X-H{i}": "1" for i in range(200)})
        assert many.status_code == 431 and "100 request headers" in many.json()["detail"]
        long_url = http.get("/flows/api/health", params={"q": "a" * 9000})
        assert long_url.status_code == 414
        # Within the bounds: served.
        fine = http.get("/flows/api/health", headers={f"X-H{i}": "v" * 100 for i in range(60)})
        assert fine.status_code == 200
    # A header line far larger than the bound is refused while it arrives, not buffered whole.
    answer = _sending_forever(web, b"GET /flows/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    assert answer.startswith(b"HTTP/1.1 431 ")
    # A bound applies to a later request of a kept-alive connection too.
    small = b"GET /flows/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = _raw(
        web,
        small + b"GET /flows/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 431 " in answer


def _sending_forever(web: Web, head: bytes) -> bytes:
    """Send ``head`` then up to 64 MiB of one header value; the answer the server gives meanwhile."""
    with socket.create_connection(("127.0.0.1", _port(web)), timeout=15) as sock:
        sock.sendall(head)
        try:
            for _ in range(1024):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # the server answered and closed: the rest is not read
        try:
            return sock.recv(65536)
        except OSError:
            return b""


def test_health_answers_on_the_allowed_hosts_with_auth(start_web: StartWeb) -> None:
    web = start_web(FLOWS, env={"FLOWJOBS_WEB_TOKEN": TOKEN}, worker=False)
    assert httpx.get(web.url("/flows/api/health"), timeout=15).status_code == 200
