"""Cross-site request forgery against a real ``flowjobs web`` in Chromium: a page on another origin
(a second local HTTP server) posts the flows UI's and the API's forms, fetches the trigger route
with a ``text/plain`` body and loads rq-dashboard's requeue link as an image. Nothing changes,
whether the browser holds Basic credentials for the web process or the process is open; the
flows UI's own forms and rq-dashboard's requeue button keep working."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, cast

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect
from rq import Queue
from rq.serializers import JSONSerializer

from flowjobs import RunStatus
from tests.conftest import free_port
from tests.security.conftest import StartWeb, Web

pytestmark = pytest.mark.slow

FLOW = "sec-csrf"
FLOWS = {
    FLOW: {"steps": {"a": {"type": "Echo", "inputs": {"x": "@triggerBody()?.x"}}}},
    "sec-csrf-boom": {"steps": {"a": {"type": "Boom"}}},
}
USER, PASSWORD = "ada", "s3cret-pass"


class _Attacker(BaseHTTPRequestHandler):
    """Serves ``pages[path]`` as HTML: the attacker's site."""

    pages: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path, "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["127.0.0.1", "localhost"], ids=["same-site-other-port", "cross-site"])
def attacker(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """An attacker's site on another port (``127.0.0.1``: same site, another origin; ``localhost``:
    another site); returns its base URL and its pages (path -> HTML)."""
    pages: dict[str, str] = {}
    handler = type("Attacker", (_Attacker,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{request.param}:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def _form(action: str) -> str:
    return (
        f'<form method="post" action="{html.escape(action)}"><input type="hidden" name="x" value="1"></form>'
        "<script>document.forms[0].submit()</script>"
    )


def _failed_jobs(web: Web) -> list[str]:
    queue = Queue(web.space.settings.queue, connection=web.space.redis, serializer=JSONSerializer)
    return queue.failed_job_registry.get_job_ids(cleanup=False)


def _attack(
    context: BrowserContext,
    attacker: tuple[str, dict[str, str]],
    name: str,
    body: str,
    target: str,
    *,
    blocked: bool = False,
) -> Response | None:
    """Open the attacker's page ``name`` (``body``) in a new tab of ``context`` and wait until the
    browser's request to ``target`` is answered: its response, or None when the browser itself
    blocks the answer (``blocked``: a JSON answer to an ``<img>`` fails in Chromium, ORB, once the
    server has handled the request)."""
    base, pages = attacker
    pages[f"/{name}"] = f"<!doctype html><html><body>{body}</body></html>"
    page = context.new_page()
    event = "requestfailed" if blocked else "response"
    try:
        with page.expect_event(event, lambda seen: seen.url == target) as answered:
            page.goto(f"{base}/{name}", wait_until="commit")  # its script navigates on at once
        # Closing a tab in mid-navigation can hang Chromium: let the page settle first.
        page.wait_for_load_state()
        return None if blocked else cast(Response, answered.value)
    finally:
        page.close()


def _assert_forgeries_change_nothing(
    web: Web, context: BrowserContext, attacker: tuple[str, dict[str, str]]
) -> None:
    flow = web.client.flows.get(FLOW)
    web.client.trigger("sec-csrf-boom")
    web.space.drain()
    failed = _failed_jobs(web)
    assert len(failed) == 1  # the failed step's job, which a requeue would retry

    for name, path in [
        ("ui-form", f"/flows/flows/{flow.id}/disable"),
        ("api-form", f"/flows/api/flows/{FLOW}/disable"),
    ]:
        answer = _attack(context, attacker, name, _form(web.url(path)), web.url(path))
        assert answer is not None and answer.status == 403, path
        assert web.client.store.flows.flow_enabled(flow.id), path

    trigger = web.url(f"/flows/api/flows/{FLOW}/trigger")
    script = (
        f"<script>fetch({trigger!r}, {{method: 'POST', mode: 'no-cors', credentials: 'include', "
        "headers: {'Content-Type': 'text/plain'}, body: '{\"x\": 1}'});</script>"
    )
    fetched = _attack(context, attacker, "fetch", script, trigger)
    assert fetched is not None and fetched.status == 403
    assert web.client.list_runs(flow_id=flow.id) == []

    requeue = web.url(f"/rq/requeue/{web.space.settings.queue}")
    _attack(context, attacker, "img", f'<img src="{html.escape(requeue)}">', requeue, blocked=True)
    assert _failed_jobs(web) == failed


def test_another_origin_changes_nothing_on_an_open_process(
    start_web: StartWeb, page: Page, attacker: tuple[str, dict[str, str]]
) -> None:
    _assert_forgeries_change_nothing(start_web(FLOWS, worker=False), page.context, attacker)


def test_another_origin_changes_nothing_with_basic_credentials_the_browser_holds(
    start_web: StartWeb, browser: Browser, attacker: tuple[str, dict[str, str]]
) -> None:
    web = start_web(FLOWS, env={"FLOWJOBS_WEB_USER": USER, "FLOWJOBS_WEB_PASSWORD": PASSWORD}, worker=False)
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        # The browser holds the credentials: its own pages of the web process open.
        page.goto(web.url("/flows/flows"))
        expect(page.locator("body")).to_contain_text(FLOW)
        _assert_forgeries_change_nothing(web, context, attacker)
    finally:
        context.close()


def test_the_flows_ui_forms_and_rq_dashboards_requeue_button_still_work(
    start_web: StartWeb, page: Page
) -> None:
    web = start_web(FLOWS, worker=False)
    flow = web.client.flows.get(FLOW)
    page.goto(web.url("/flows/flows"))
    page.locator(f'form[action$="/flows/{flow.id}/disable"] button').click()
    expect(page.locator("body")).to_contain_text(f"{FLOW} disabled")
    assert not web.client.store.flows.flow_enabled(flow.id)

    handle = web.client.trigger("sec-csrf-boom")
    web.space.drain()
    assert handle.detail().status is RunStatus.Failed
    [job_id] = _failed_jobs(web)
    page.goto(web.url(f"/rq/0/view/job/{job_id}"))
    with page.expect_response(lambda answer: answer.url.endswith(f"/rq/job/{job_id}/requeue")) as answered:
        page.locator("#requeue-job-btn").click()
    assert answered.value.status == 200
    assert _failed_jobs(web) == []


def test_pages_cannot_be_framed_by_another_origin(
    start_web: StartWeb, page: Page, attacker: tuple[str, dict[str, str]]
) -> None:
    web = start_web(FLOWS, worker=False)
    target = web.url("/flows/")
    frame = f'<iframe src="{html.escape(target)}"></iframe>'
    answer = _attack(page.context, attacker, "frame", frame, target)
    assert answer is not None and answer.status == 403 and answer.headers["x-frame-options"] == "DENY"
