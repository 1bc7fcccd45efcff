"""The flows UI in a real browser: Debian's Chromium driven by Playwright, against a real uvicorn
server, a real ``flowjobs worker`` subprocess and real Redis. Screenshots of every page at
1280x800 and 390x844 go to ``tests/e2e/artifacts/`` (git-ignored) for people to look at."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, ViewportSize, expect

from flowjobs import RunStatus
from flowjobs.client import FlowClient
from flowjobs.core.registry import FlowRegistry
from flowjobs.web.ui import seconds_text
from tests.browser import DESKTOP
from tests.conftest import ROOT, Space, free_port, http_status, wait_parked, wait_until

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SIZES: dict[str, ViewportSize] = {"desktop": DESKTOP, "phone": {"width": 390, "height": 844}}

pytestmark = pytest.mark.slow


#: The name of the ``ui-stats`` flow: markup a page must show as text, never run.
HOSTILE = "<img src=x onerror=alert(1)> & \"st'ats\" </h1><script>alert(2)</script>"


def _flows(token: str) -> dict[str, dict[str, Any]]:
    """The flows of these tests, in flow-file form (keys of the test's own Redis corner)."""
    return {
        "ui-hello": {
            "id": "5b0e7c1a-0000-4000-8000-0000000000a1",
            "steps": {
                "fetch": {"type": "Echo", "inputs": {"orderId": "@triggerBody()?.orderId"}},
                "ship": {"type": "Echo", "run_after": ["fetch"]},
                "notify": {"type": "Noop", "run_after": ["ship"]},
                "rescue": {"type": "Noop", "run_after": {"ship": ["Failed"]}},
            },
        },
        "ui-flaky": {
            "id": "5b0e7c1a-0000-4000-8000-0000000000a2",
            "steps": {
                "fetch": {"type": "Echo"},
                "ship": {
                    "type": "Flaky",
                    "run_after": ["fetch"],
                    "inputs": {"key": f"{token}:flaky", "succeed_on": 2},
                },
            },
        },
        "ui-approval": {
            "id": "5b0e7c1a-0000-4000-8000-0000000000a3",
            "steps": {
                "quote": {"type": "Echo"},
                "wait": {
                    "type": "WaitForSignal",
                    "run_after": ["quote"],
                    "inputs": {"signalName": "approved"},
                },
                "book": {"type": "Noop", "run_after": ["wait"]},
            },
        },
        "ui-stats": {
            "id": "5b0e7c1a-0000-4000-8000-0000000000a5",
            "name": HOSTILE,
            "steps": {
                "pick": {"type": "Echo", "inputs": {"fail": "@triggerBody()?.fail"}},
                "naïve_étape": {
                    "type": "Boom",
                    "run_after": {
                        "pick": {"statuses": ["Succeeded"], "when": "@steps('pick').output.inputs.fail"}
                    },
                },
                "done": {"type": "Noop", "run_after": ["pick"]},
            },
        },
        "ui-batch": {
            "id": "5b0e7c1a-0000-4000-8000-0000000000a4",
            "triggers": {
                "manual": {"type": "Manual"},
                "nightly": {"type": "Cron", "inputs": {"cronExpression": "0 3 * * *", "items": [1, 2]}},
            },
            "steps": {
                "each": {
                    "type": "ForEach",
                    "forEach": "@triggerBody()?.items",
                    "steps": {
                        "resize": {"type": "Echo"},
                        "store": {"type": "Noop", "run_after": ["resize"]},
                    },
                },
                "report": {"type": "Noop", "run_after": ["each"]},
            },
        },
    }


class UI:
    """The running web process and what the tests drive it with."""

    def __init__(self, base: str, client: FlowClient, space: Space) -> None:
        self.base = base
        self.client = client
        self.space = space

    def url(self, path: str) -> str:
        """Absolute URL of a path of the web process."""
        return f"{self.base}{path}"

    def wait_run(self, run_id: object, *statuses: RunStatus) -> None:
        """Until the run (read through the Python API) is in one of ``statuses``."""

        def reached() -> bool:
            run = self.client.get_run(str(run_id))
            return run is not None and run.status in statuses

        wait_until(reached, timeout=30, what=f"run {run_id} to be {'/'.join(statuses)}")

    def wait_parked(self, run_id: object, step_key: str) -> None:
        """Until a WaitForSignal step is parked: Pending again after its first attempt ran."""
        wait_parked(self.client, run_id, step_key)


def _start_ui(space: Space, tmp_path: Path, env: dict[str, str] | None = None) -> UI:
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir(exist_ok=True)
    for name, body in _flows(space.token).items():
        (flows_dir / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **body}))
    space.settings = space.settings.model_copy(update={"flows_dir": flows_dir})
    registry = FlowRegistry()
    registry.load_dir(flows_dir)
    client = space.client(registry)
    client.sync_schedules()
    space.start_worker("ui")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "flowjobs.web.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**space.env(), **(env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    space.processes.append(proc)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_status(f"{base}/flows/api/health") == 200, timeout=30, what="the web process")
    return UI(base, client, space)


@pytest.fixture
def ui(space: Space, tmp_path: Path) -> UI:
    return _start_ui(space, tmp_path)


def _shoot(
    page: Page, name: str, url: str | None = None, ready: Callable[[Page], None] | None = None
) -> None:
    """Screenshots of a page at both sizes, and its layout checked for the phone width: nothing
    may stick out sideways (wide tables and the DAG scroll inside their own boxes)."""
    ARTIFACTS.mkdir(exist_ok=True)
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        if url is not None:
            page.goto(url)
        if ready is not None:
            ready(page)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {size} is {overflow}px wider than the window"
    page.set_viewport_size(SIZES["desktop"])


def _run_badge(page: Page) -> Any:
    return page.locator("#live-run h1 .badge")


def test_trigger_from_the_ui_and_watch_it_succeed_without_a_reload(ui: UI, page: Page) -> None:
    page.goto(ui.url("/flows/flows"))
    card = page.locator("#flow-ui-hello")
    card.get_by_text("Trigger ui-hello…").click()
    body = card.get_by_label("Body (JSON, optional)")
    # A body that is not JSON is refused in place, the text kept for fixing.
    body.fill('{"orderId": 42')
    card.get_by_role("button", name="Trigger run").click()
    expect(card.get_by_role("alert")).to_contain_text("The body is not valid JSON")
    _shoot(
        page, "flows-error", ready=lambda p: expect(p.locator("#flow-ui-hello [role=alert]")).to_be_visible()
    )
    expect(body).to_have_value('{"orderId": 42')
    body.fill('{"orderId": 42}')
    card.get_by_role("button", name="Trigger run").click()
    expect(page).to_have_url(re.compile(r"/flows/runs/[0-9a-f-]{36}"))
    page.evaluate("window.__sameDocument = true")
    expect(_run_badge(page)).to_have_text("Succeeded")
    expect(page.locator("#live-status")).to_have_text("Live")
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    expect(page.locator('svg.dag a[data-step="notify"]')).to_have_class(re.compile(r"st-Succeeded"))
    expect(page.locator('svg.dag a[data-step="rescue"]')).to_have_class(re.compile(r"st-Skipped"))
    run_id = page.locator("#run-id").inner_text()
    data = ui.client.get_run(run_id)
    assert data is not None and json.loads(data.trigger_data_json or "null") == {"orderId": 42}

    # Every page, at both sizes, once there is something to show.
    flaky = ui.client.trigger("ui-flaky")
    batch = ui.client.trigger("ui-batch", data={"items": ["a.png", "b.png", "c.png"]})
    ui.client.trigger("ui-approval")
    ui.wait_run(flaky.run_id, RunStatus.Failed)
    ui.wait_run(batch.run_id, RunStatus.Succeeded)
    _shoot(page, "overview", ui.url("/flows/"), lambda p: expect(p.locator(".chart")).to_be_visible())
    _shoot(page, "flows", ui.url("/flows/flows"))
    _shoot(
        page,
        "runs",
        ui.url("/flows/runs"),
        lambda p: expect(p.locator("table.runs tbody tr")).to_have_count(4),
    )
    _shoot(
        page,
        "schedules",
        ui.url("/flows/schedules"),
        lambda p: expect(p.get_by_text("0 3 * * *")).to_be_visible(),
    )
    _shoot(
        page,
        "run",
        ui.url(f"/flows/runs/{run_id}?step=ship"),
        lambda p: expect(p.locator("#panel-title")).to_contain_text("ship"),
    )
    _shoot(page, "run-failed", ui.url(f"/flows/runs/{flaky.run_id}?step=ship"))
    _shoot(page, "run-foreach", ui.url(f"/flows/runs/{batch.run_id}?step=each.resize"),
           lambda p: expect(p.locator(".step-panel details")).to_have_count(3))  # fmt: skip
    _shoot(
        page,
        "not-found",
        ui.url("/flows/search?q=no-such-job"),
        lambda p: expect(p.locator("h1")).to_have_text("Nothing found"),
    )


def test_open_a_step_follow_its_job_into_rq_and_come_back_by_the_search_box(ui: UI, page: Page) -> None:
    handle = ui.client.trigger("ui-hello", data={"orderId": 7})
    ui.wait_run(handle.run_id, RunStatus.Succeeded)
    page.goto(ui.url(f"/flows/runs/{handle.run_id}"))
    # Steps of the drawing are links: reachable and opened with the keyboard as with the mouse.
    page.locator('svg.dag a[data-step="ship"]').focus()
    page.keyboard.press("Enter")
    expect(page.locator("#panel-title")).to_contain_text("ship")
    page.locator('svg.dag a[data-step="fetch"]').click()
    panel = page.locator("#step-panel")
    expect(panel.locator("#panel-title")).to_contain_text("fetch")
    expect(panel).to_contain_text('"orderId": 7')
    job_link = panel.locator("a.job-link").first
    job_id = job_link.get_attribute("data-job-id") or ""
    job_link.click()
    expect(page).to_have_url(ui.url(f"/rq/0/view/job/{job_id}"))
    expect(page.get_by_text(job_id).first).to_be_visible()

    page.goto(ui.url("/flows/"))
    page.get_by_label("Run id or job id").fill(job_id)
    page.get_by_label("Run id or job id").press("Enter")
    expect(page).to_have_url(re.compile(rf"/flows/runs/{handle.run_id}\?job="))
    expect(page.locator("#panel-title")).to_contain_text("fetch")
    page.get_by_label("Run id or job id").fill(str(handle.run_id))
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#run-id")).to_have_text(str(handle.run_id))


def test_htmx_evaluates_no_script_from_a_response(ui: UI, page: Page) -> None:
    """The bundled htmx has eval paths (``<script>`` in swapped HTML, ``hx-on``/``js:`` values);
    the pages switch them off in their ``htmx-config`` meta, so HTML that reaches a swap — a run's
    output shown in a panel, say — can never run code."""
    page.goto(ui.url("/flows/"))
    config = page.evaluate("() => [htmx.config.allowEval, htmx.config.allowScriptTags]")
    assert config == [False, False]
    page.evaluate(
        """() => {
            const target = document.createElement('div');
            target.id = 'swap-probe';
            document.body.appendChild(target);
            htmx.swap(target, '<p>swapped</p><script>window.__probeRan = true</script>',
                      {swapStyle: 'innerHTML', swapDelay: 0, settleDelay: 0});
            const button = document.createElement('button');
            button.id = 'on-probe';
            button.setAttribute('hx-on:click', 'window.__probeRan = true');
            document.body.appendChild(button);
            htmx.process(button);
        }"""
    )
    expect(page.locator("#swap-probe p")).to_have_text("swapped")
    page.locator("#on-probe").click()
    ran = page.evaluate("() => window.__probeRan === true")
    kept_script = page.evaluate("() => document.querySelector('#swap-probe script') !== null")
    assert (ran, kept_script) == (False, False)


def test_pages_forbid_eval_and_inline_scripts(ui: UI, page: Page) -> None:
    """Below the htmx config, the pages' Content-Security-Policy: with htmx's ``allowEval`` and
    ``allowScriptTags`` switched back on, the browser itself still refuses the swapped ``<script>``
    and the ``hx-on`` handler (each a CSP violation), while the UI's own files keep working."""
    response = page.goto(ui.url("/flows/"))
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    page.evaluate(
        """() => {
            window.__violations = [];
            document.addEventListener('securitypolicyviolation',
                                      (event) => window.__violations.push(event.effectiveDirective));
            htmx.config.allowEval = true;
            htmx.config.allowScriptTags = true;
            const target = document.createElement('div');
            target.id = 'csp-probe';
            document.body.appendChild(target);
            htmx.swap(target, '<p>swapped</p><script>window.__probeRan = true</script>',
                      {swapStyle: 'innerHTML', swapDelay: 0, settleDelay: 0});
            const button = document.createElement('button');
            button.id = 'csp-on-probe';
            button.setAttribute('hx-on:click', 'window.__probeRan = true');
            document.body.appendChild(button);
            htmx.process(button);
        }"""
    )
    expect(page.locator("#csp-probe p")).to_have_text("swapped")
    page.locator("#csp-on-probe").click()
    page.wait_for_function("() => window.__violations.length >= 2")
    ran = page.evaluate("() => window.__probeRan === true")
    directives = set(page.evaluate("() => window.__violations"))
    assert ran is False
    assert directives <= {"script-src", "script-src-elem"} and directives


def test_cancel_a_parked_run(ui: UI, page: Page) -> None:
    handle = ui.client.trigger("ui-approval")

    ui.wait_parked(handle.run_id, "wait")
    page.goto(ui.url(f"/flows/runs/{handle.run_id}"))
    expect(page.get_by_label("Signal", exact=True)).to_have_value("approved")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel run").click()
    expect(page.get_by_role("status").filter(has_text="Cancel requested")).to_be_visible()
    expect(_run_badge(page)).to_have_text("Cancelled")
    expect(page.locator('svg.dag a[data-step="wait"]')).to_have_class(re.compile(r"st-Skipped"))
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)


def test_retry_a_failed_step(ui: UI, page: Page) -> None:
    handle = ui.client.trigger("ui-flaky")
    ui.wait_run(handle.run_id, RunStatus.Failed)
    page.goto(ui.url(f"/flows/runs/{handle.run_id}"))
    expect(_run_badge(page)).to_have_text("Failed")
    page.locator('svg.dag a[data-step="ship"]').click()
    expect(page.locator("#step-panel pre.error")).to_contain_text("flaky failure on attempt 1")
    page.get_by_role("button", name="Retry step").click()
    expect(page.get_by_role("status").filter(has_text="Retry of ship queued")).to_be_visible()
    expect(_run_badge(page)).to_have_text("Succeeded")
    expect(page.locator("table.attempts tbody tr")).to_have_count(2)


def test_rerun_and_follow_the_lineage(ui: UI, page: Page) -> None:
    source = ui.client.trigger("ui-hello", data={"orderId": 1})
    ui.wait_run(source.run_id, RunStatus.Succeeded)
    page.goto(ui.url(f"/flows/runs/{source.run_id}"))
    page.get_by_role("button", name="Re-run").click()
    expect(page.get_by_role("status").filter(has_text=f"Re-run of {source.run_id}")).to_be_visible()
    new_id = page.locator("#run-id").inner_text()
    assert new_id != str(source.run_id)
    expect(_run_badge(page)).to_have_text("Succeeded")
    page.locator(".lineage").get_by_role("link").first.click()
    expect(page.locator("#run-id")).to_have_text(str(source.run_id))
    page.locator(".lineage a.rerun-link").click()
    expect(page.locator("#run-id")).to_have_text(new_id)


def test_auth_refuses_without_credentials_and_lets_people_log_in(
    space: Space, tmp_path: Path, browser: Browser
) -> None:
    ui = _start_ui(
        space,
        tmp_path,
        {
            "FLOWJOBS_WEB_USER": "ada",
            "FLOWJOBS_WEB_PASSWORD": "s3cret-pass",
            "FLOWJOBS_WEB_TOKEN": "tok-123456",
        },
    )
    # Headless Chromium has no login prompt: a 401 with a Basic challenge is seen on the wire.
    for refused in ({}, {"http_credentials": {"username": "ada", "password": "nope"}}):
        context = browser.new_context(**refused)  # type: ignore[arg-type]
        for path in ("/flows/", "/flows/runs", "/flows/events", "/flows/static/flows.css", "/rq/"):
            answer = context.request.get(ui.url(path))
            assert answer.status == 401, (refused, path, answer.status)
        context.close()

    for credentials in (
        {"http_credentials": {"username": "ada", "password": "s3cret-pass"}},
        {"extra_http_headers": {"Authorization": "Bearer tok-123456"}},
    ):
        context = browser.new_context(viewport=SIZES["desktop"], **credentials)  # type: ignore[arg-type]
        page = context.new_page()
        response = page.goto(ui.url("/flows/flows"))
        assert response is not None and response.status == 200
        card = page.locator("#flow-ui-hello")
        card.get_by_text("Trigger ui-hello…").click()
        card.get_by_role("button", name="Trigger run").click()
        # The event stream is behind the same auth: Live means it was let in.
        expect(_run_badge(page)).to_have_text("Succeeded")
        expect(page.locator("#live-status")).to_have_text("Live")
        context.close()


def test_without_the_event_stream_pages_poll(ui: UI, page: Page) -> None:
    handle = ui.client.trigger("ui-approval")
    ui.wait_parked(handle.run_id, "wait")
    # A proxy that buffers or drops server-sent events: the stream never opens.
    page.route("**/flows/events*", lambda route: route.abort())
    page.goto(ui.url(f"/flows/runs/{handle.run_id}"))
    expect(page.locator("#live-status")).to_have_text("Polling")
    page.evaluate("window.__sameDocument = true")
    wait_until(
        lambda: ui.client.signal(handle.run_id, "approved", {"by": "ada"}) == "resumed", what="a parked step"
    )
    expect(_run_badge(page)).to_have_text("Succeeded")
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def _undrawable(page: Page) -> list[str]:
    """The characters of the page's text that no font fontconfig knows (Chromium's source of fonts
    here) draws: each would show as a box."""
    text: str = page.evaluate("document.body.innerText")
    return [
        char
        for char in sorted({c for c in text if ord(c) > 0x7E})
        if not subprocess.run(
            ["fc-list", f":charset={ord(char):x}", "family"], capture_output=True, text=True, check=True
        ).stdout.strip()
    ]


def test_every_character_of_the_overview_is_one_the_machines_fonts_draw(ui: UI, page: Page) -> None:
    """The overview with no failed run said so with an emoji no installed font has: a box. Every
    character of a page must be in a font the machine has."""
    page.goto(ui.url("/flows/"))
    expect(page.get_by_text("No failed runs.")).to_be_visible()
    assert _undrawable(page) == []


def test_the_overviews_queue_and_a_flows_last_24_hours(ui: UI, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    ok, failing = 3, 2
    handles = [ui.client.trigger(HOSTILE, data={"fail": i >= ok}) for i in range(ok + failing)]
    for handle in handles:
        ui.wait_run(handle.run_id, RunStatus.Succeeded, RunStatus.Failed)

    page.goto(ui.url("/flows/"))
    queue = page.get_by_role("region", name=f"Queue {ui.space.settings.queue}")
    expect(queue.locator("#queue-depth")).to_have_text("0")
    expect(queue.locator("#queue-oldest")).to_have_text("none waiting")
    expect(queue.locator("#queue-workers")).to_have_text("1")  # the test's `flowjobs worker`

    definition = ui.client.flows.get(HOSTILE)
    page.goto(ui.url("/flows/flows"))
    page.locator(f'a[href="/flows/flows/{definition.id}"]').click()
    expect(page).to_have_url(ui.url(f"/flows/flows/{definition.id}"))
    expect(page.locator("h1")).to_contain_text(HOSTILE)
    assert page.locator("main img, main script").count() == 0, "the name stayed text"
    expect(page.locator("#stat-runs .n")).to_have_text(str(ok + failing))
    expect(page.locator("#stat-Succeeded .n")).to_have_text(str(ok))
    expect(page.locator("#stat-Failed .n")).to_have_text(str(failing))
    expect(page.locator("#stat-success")).to_have_text("60.0 %")
    stats = ui.client.queries.flow_stats(definition)
    expect(page.locator("#stat-p50")).to_have_text(seconds_text(stats.run_durations.p50_seconds))
    expect(page.locator("#stat-p95")).to_have_text(seconds_text(stats.run_durations.p95_seconds))
    expect(page.locator("#stat-sample")).to_contain_text(f"all {ok + failing} finished runs")
    rows = page.locator("table.slowest tbody tr")
    expect(rows).to_have_count(3)
    cells = [row.locator("td") for row in rows.all()]
    counts = {cell.nth(0).inner_text(): cell.nth(1).inner_text() for cell in cells}
    assert counts == {"pick": "5", "done": "5", "naïve_étape": "2"}
    page.get_by_text("Counts per hour").click()
    last_hour = page.locator("table.hours tbody tr").last
    expect(last_hour.locator("td")).to_have_text(
        [last_hour.locator("td").first.inner_text(), "0", "0", str(ok), str(failing), "0", "0", "0"]
    )
    assert _undrawable(page) == [] and dialogs == []
    _shoot(page, "flow-stats", ready=lambda p: expect(p.locator(".chart")).to_be_visible())

    missing = page.goto(ui.url("/flows/flows/no-such-flow"))
    assert missing is not None and missing.status == 404
    expect(page.locator("h1")).to_have_text("Flow not found")
