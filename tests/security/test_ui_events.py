"""The flows UI's event stream (``/flows/events``) against text a run carries (a handler's error
message that looks like server-sent event fields) and against a Redis that is not there."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from flowjobs import RunStatus
from tests.browser import DESKTOP
from tests.conftest import free_port, wait_until
from tests.security.conftest import StartWeb, Web

FLOWS: dict[str, dict[str, Any]] = {
    "sse-boom": {"steps": {"a": {"type": "Boom", "inputs": {"message": "@triggerBody()?.message"}}}},
    "sse-wait": {
        "steps": {
            "quote": {"type": "Noop"},
            "wait": {"type": "WaitForSignal", "run_after": ["quote"], "inputs": {"signalName": "approved"}},
        }
    },
}

#: Records every event of the page's EventSource (flows.js builds one per page).
RECORD_EVENTS = """
window.__sse = [];
const NativeEventSource = window.EventSource;
window.EventSource = function (url, options) {
  const source = new NativeEventSource(url, options);
  for (const type of ["run", "ready", "message"]) {
    source.addEventListener(type, (event) => window.__sse.push({type: type, data: event.data}));
  }
  return source;
};
window.EventSource.prototype = NativeEventSource.prototype;
"""


def forged(other_run: str) -> str:
    """An error message that, written raw into the stream, would be events of ``other_run``, a
    second ``ready`` and a reconnection delay of a day."""
    fake = {"runId": other_run, "seq": 999, "type": "run.completed", "stepKey": None, "message": None}
    return (
        f"boom\n\nevent: run\ndata: {other_run}|999|0|run.completed|\n\n"
        f"event: run\ndata: {json.dumps(fake)}\n\n"
        "event: ready\ndata: {}\n\nretry: 86400000\nid: forged\n\n"
    )


def failed_with_forgery(web: Web, other_run: str) -> str:
    handle = web.client.trigger("sse-boom", data={"message": forged(other_run)})

    def failed() -> bool:
        run = web.client.get_run(handle.run_id)
        return run is not None and run.status is RunStatus.Failed

    wait_until(failed, timeout=30, what="the sse-boom run to fail")
    return str(handle.run_id)


def sse_blocks(lines: Iterator[str]) -> Iterator[list[str]]:
    """The stream's events (and comments), each as its lines."""
    block: list[str] = []
    for line in lines:
        if line:
            block.append(line)
        elif block:
            yield block
            block = []


def run_event(block: list[str]) -> dict[str, Any]:
    """The JSON of a ``run`` event, checked to be exactly one ``event:`` and one ``data:`` line."""
    assert len(block) == 2 and block[0] == "event: run" and block[1].startswith("data: "), block
    data: dict[str, Any] = json.loads(block[1].removeprefix("data: "))
    assert set(data) == {"runId", "seq", "type", "stepKey", "message"}, data
    return data


def events_until_completed(blocks: Iterator[list[str]], timeout: float = 20.0) -> list[dict[str, Any]]:
    """The stream's ``run`` events up to a ``run.completed`` (pings skipped); fails once ``timeout``
    seconds have passed without one (a wait for the next block lasts up to a ping's interval)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while not any(e["type"] == "run.completed" for e in seen):
        assert time.monotonic() < deadline, f"no run.completed within {timeout:g}s; heard {seen}"
        block = next(blocks)
        if block != [": ping"]:
            seen.append(run_event(block))
    return seen


def test_each_event_is_one_data_line_of_json_whatever_the_message(start_web: StartWeb) -> None:
    web = start_web(FLOWS)
    other = web.parked("sse-wait")
    with httpx.Client(base_url=web.base, timeout=30) as http:
        with (
            http.stream("GET", "/flows/events") as everything,
            http.stream("GET", "/flows/events", params={"run": other}) as filtered,
        ):
            assert everything.status_code == filtered.status_code == 200
            assert everything.headers["content-type"].startswith("text/event-stream")
            all_blocks, other_blocks = sse_blocks(everything.iter_lines()), sse_blocks(filtered.iter_lines())
            # Subscribed once `ready` arrives (with the stream's only `retry:` field).
            assert next(all_blocks)[:2] == next(other_blocks)[:2] == ["retry: 3000", "event: ready"]
            boom = failed_with_forgery(web, other)
            seen = events_until_completed(all_blocks)
            assert {e["runId"] for e in seen} == {boom}
            # Triggered once the stream listened: every event of the run, from its start.
            assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
            assert seen[0]["type"] == "run.started"
            failure = next(e for e in seen if e["type"] == "step.failed")
            assert "event: run" in failure["message"] and "retry: 86400000" in failure["message"]

            # The filtered stream: only the other run's events, none of the forged ones.
            web.client.signal(other, "approved")
            mine = events_until_completed(other_blocks)
            assert {e["runId"] for e in mine} == {other}
            assert 999 not in {e["seq"] for e in mine}
        # Only a run id follows one run: no prefix of one, no other text.
        for bad in (other[:8], f"{other}|", "*", "x" * 5000):
            assert http.get("/flows/events", params={"run": bad}).status_code == 404, bad


def test_a_stream_hears_a_run_moved_right_after_its_ready_by_a_worker_that_read_no_listener(
    start_web: StartWeb,
) -> None:
    """A worker reads the listeners marker at most once a second and trusts a read for a while
    (``LISTENER_VIEW_SECONDS``): the stream says ``ready`` only once no worker can still trust a
    read made before it listened (``LISTENERS_SETTLE_SECONDS``), so a run that started unheard and
    moves right after ``ready`` is heard (ci12: the stream waited for these events forever)."""
    web = start_web(FLOWS)
    parked = web.parked("sse-wait")  # its worker has just read the marker: no live view then
    with (
        httpx.Client(base_url=web.base, timeout=30) as http,
        http.stream("GET", "/flows/events", params={"run": parked}) as stream,
    ):
        blocks = sse_blocks(stream.iter_lines())
        assert next(blocks)[:2] == ["retry: 3000", "event: ready"]
        web.client.signal(parked, "approved")
        heard = events_until_completed(blocks)
    assert [(e["type"], e["stepKey"]) for e in heard] == [
        ("step.started", "wait"),
        ("step.completed", "wait"),
        ("run.completed", None),
    ]
    first = heard[0]["seq"]
    assert [e["seq"] for e in heard] == [first, first + 1, first + 2]


def _events_of(page: Page) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = page.evaluate("window.__sse")
    return recorded


def _run_events(page: Page) -> list[dict[str, Any]]:
    """The page's ``run`` events, each asserted to be a JSON object of a run."""
    out = []
    for event in _events_of(page):
        if event["type"] == "run":
            data = json.loads(event["data"])
            assert isinstance(data, dict) and isinstance(data.get("runId"), str), event
            out.append(data)
    return out


def test_a_forged_event_in_a_message_moves_no_other_page(start_web: StartWeb, browser: Browser) -> None:
    web = start_web(FLOWS)
    other = web.parked("sse-wait")
    context = browser.new_context(viewport=DESKTOP)
    context.add_init_script(RECORD_EVENTS)
    overview, other_page = context.new_page(), context.new_page()
    overview.goto(web.url("/flows/"))
    other_page.goto(web.url(f"/flows/runs/{other}"))
    for page in (overview, other_page):
        expect(page.locator("#live-status")).to_have_text("Live")
        page.evaluate("window.__sameDocument = true")
    other_refreshes: list[str] = []
    other_page.on("request", lambda r: other_refreshes.append(r.url) if r.resource_type == "xhr" else None)

    boom = failed_with_forgery(web, other)
    wait_until(
        lambda: any(e["runId"] == boom and e["type"] == "run.completed" for e in _run_events(overview)),
        timeout=30,
        what="the overview to see the failed run",
    )
    # The overview got the failed run's events as data (no other run's, no second `ready`); the
    # other run's page got nothing of them, and moves on its own events.
    assert {e["runId"] for e in _run_events(overview)} == {boom}
    assert [e["type"] for e in _events_of(overview)].count("ready") == 1
    assert _run_events(other_page) == []
    requests_before = len(other_refreshes)
    web.client.signal(other, "approved")
    expect(other_page.locator("#live-run h1 .badge")).to_have_text("Succeeded")
    assert len(other_refreshes) > requests_before
    assert {e["runId"] for e in _run_events(other_page)} == {other}

    # The stream stays live: a later run still reaches the overview, whose counts follow.
    later = web.client.trigger("sse-wait")
    wait_until(
        lambda: any(e["runId"] == str(later.run_id) for e in _run_events(overview)),
        timeout=30,
        what="the overview to see a later run",
    )
    for page in (overview, other_page):
        expect(page.locator("#live-status")).to_have_text("Live")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    context.close()


def test_without_redis_the_stream_and_the_pages_answer_503(start_web: StartWeb, tmp_path: Path) -> None:
    """An EventSource that gets a 503 fails and the page polls (``test_ui_browser``'s
    ``test_without_the_event_stream_pages_poll``); before, the stream answered 200 and broke."""
    log = tmp_path / "web.log"
    dead = f"redis://127.0.0.1:{free_port()}/0"
    web = start_web(FLOWS, env={"REDIS_URL": dead}, worker=False, health_status=503, output=log)
    with web.http() as http:
        for _ in range(3):
            with http.stream("GET", "/flows/events") as answer:
                assert answer.status_code == 503
                assert not answer.headers["content-type"].startswith("text/event-stream")
        for path in ("/flows/", "/flows/runs", f"/flows/runs/{'0' * 8}-0000-4000-8000-{'0' * 12}"):
            answer = http.get(path)
            assert answer.status_code == 503, path
            assert "Redis is unreachable" in answer.text
    text = log.read_text()
    assert "web.ui.redis_unreachable" in text
    assert "response already started" not in text.lower() and "Traceback" not in text


def test_a_redis_error_that_is_not_an_outage_is_a_500_with_an_error_id(
    start_web: StartWeb, tmp_path: Path
) -> None:
    log = tmp_path / "web.log"
    web = start_web(FLOWS, worker=False, output=log)
    # A key of the wrong type: Redis answers WRONGTYPE, which no retry will heal.
    web.space.redis.set(web.space.keys.status_runs("Running"), "not a sorted set")
    with web.http() as http:
        answer = http.get("/flows/")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    error_id = answer.text.split("Error id: ", 1)[1].split(" ", 1)[0]
    assert len(error_id) == 32 and "WRONGTYPE" not in answer.text

    def logged() -> bool:
        return any("web.ui.error" in line and error_id in line for line in log.read_text().splitlines())

    wait_until(logged, timeout=10, what="the error id in the log")
    assert "WRONGTYPE" in log.read_text()
