"""rq-dashboard at ``/rq`` as an attacker meets it (issue 12): job data anyone wrote renders as text
under a CSP (item 1), no GET changes state (item 2), a job RQ forgot is a helpful 404 (item 7),
and a lost Redis is a 503, any other error a 500 with an error id (item 10)."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Page, expect
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from flowjobs import RunStatus
from tests.conftest import Space, free_port, wait_until
from tests.security.conftest import StartWeb, Web

pytestmark = pytest.mark.slow

#: Runs script if printed as markup: on load (``<img>``), when inserted by jQuery (``<script>``),
#: and the issue's attack, the operator disabling a flow with their own credentials.
PAYLOAD = (
    "<img src=x onerror=window.__pwned=1>"
    "<script>window.__pwned=1</script>"
    "<img src=x onerror=\"fetch('/flows/api/flows/sec-victim/disable',{method:'POST'})\">"
)
#: Parts of ``PAYLOAD`` that read the same inside JSON (no quotes), to find on the page as text.
VISIBLE = ("<img src=x onerror=window.__pwned=1>", "<script>window.__pwned=1</script>")
VICTIM = {"sec-victim": {"steps": {"a": {"type": "Noop"}}}}
CSP_REFUSAL = "Content Security Policy"


def _wait_run(web: Web, run_id: object, status: RunStatus) -> None:
    def reached() -> bool:
        run = web.client.get_run(str(run_id))
        return run is not None and run.status is status

    wait_until(reached, timeout=30, what=f"run {run_id} to be {status}")


def _step_jobs(web: Web, run_id: object) -> dict[str, str]:
    run = web.client.get_run_detail(str(run_id))
    assert run is not None
    return {step.step_key: step.job_id or "" for step in run.steps or []}


def _hostile_job(space: Space, origin: str | None = None) -> str:
    """A failed RQ job in this space's queue's failed registry written without flowjobs (no flow
    validation between the attacker and RQ): flow name, step key, step type, meta and error all
    hostile; its origin ``origin`` (default: the queue, so the queue's job list shows it)."""
    job = Job.create(
        "tests.handlers.echo",
        connection=space.redis,
        serializer=JSONSerializer,
        id=f"{space.token}-hostile-{uuid.uuid4().hex}",
        description=f"flow={PAYLOAD} run=x step={PAYLOAD} attempt=1",
        origin=origin or space.settings.queue,
        meta={"flow_name": PAYLOAD, "step_key": PAYLOAD, "step_type": PAYLOAD},
        status=JobStatus.FAILED,
    )
    job.save()
    FailedJobRegistry(space.settings.queue, connection=space.redis).add(job, ttl=600, exc_string=PAYLOAD)
    Result.create_failure(job, 600, exc_string=PAYLOAD)
    return job.id


def _watch_csp(page: Page) -> list[str]:
    """Console messages of CSP refusals on ``page`` from now on."""
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text) if CSP_REFUSAL in message.text else None)
    return refusals


def _assert_inert(page: Page, web: Web) -> None:
    """Nothing of the payload became markup, nothing ran, the victim flow is still enabled."""
    assert page.locator("#job-data img, #job-data script, #jobs tbody img, #jobs tbody script").count() == 0
    assert page.evaluate("window.__pwned") is None
    with web.http() as http:
        assert http.get("/flows/api/flows/sec-victim").json()["isEnabled"] is True


def test_hostile_job_data_renders_as_text_on_every_rq_page(
    start_web: StartWeb, space: Space, page: Page
) -> None:
    flows: dict[str, dict[str, Any]] = {
        **VICTIM,
        "sec-xss": {
            "steps": {
                "echo": {"type": "Echo", "inputs": {"x": "@triggerBody()?.x"}},
                "boom": {"type": "Boom", "inputs": {"message": "@triggerBody()?.x"}},
            }
        },
    }
    web = start_web(flows)
    handle = web.client.trigger("sec-xss", data={"x": PAYLOAD})
    _wait_run(web, handle.run_id, RunStatus.Failed)
    jobs = _step_jobs(web, handle.run_id)
    hostile = _hostile_job(space)
    refusals = _watch_csp(page)

    # The step's output (the job's result), the handler's error raised with its input, and jobs
    # whose every field is hostile, origin too: each job page shows them as text.
    for job_id in (jobs["echo"], jobs["boom"], hostile, _hostile_job(space, origin=PAYLOAD)):
        answer = page.goto(web.url(f"/rq/0/view/job/{job_id}"))
        assert answer is not None and answer.status == 200
        for text in VISIBLE:
            expect(page.locator("#job-data")).to_contain_text(text)
        _assert_inert(page, web)

    queue = space.settings.queue
    for registry, expected in (("failed", (jobs["boom"], hostile)), ("finished", (jobs["echo"],))):
        page.goto(web.url(f"/rq/0/view/jobs/{queue}/{registry}/8/asc/1"))
        for job_id in expected:
            expect(page.locator(f'#jobs tr[data-job-id="{job_id}"]')).to_be_visible()
        if registry == "failed":
            expect(page.locator("#jobs tbody")).to_contain_text(VISIBLE[1])
        _assert_inert(page, web)

    # A queue name in the link an operator follows ends up in the page's JavaScript: it stays text.
    reflected = "x'+(window.__pwned=1)+'"
    page.goto(web.url(f"/rq/0/view/jobs/{quote(reflected, safe='')}/failed/8/asc/1"))
    box = page.locator("#select-queue")
    box.click()  # the page empties the box on click and puts the queue name back on mouse leave
    page.mouse.move(0, 0)
    expect(box).to_have_value(reflected)
    _assert_inert(page, web)
    assert refusals == [], "rq-dashboard's own scripts and styles run under its CSP"


def test_every_rq_page_is_escaped_and_carries_the_strict_headers(start_web: StartWeb, space: Space) -> None:
    web = start_web(VICTIM, worker=False)
    hostile = _hostile_job(space)
    queue = space.settings.queue
    pages = (
        "/rq/",
        "/rq/0/view/workers",
        f"/rq/0/view/jobs/{queue}/failed/8/asc/1",
        f"/rq/0/view/job/{hostile}",
    )
    with web.http() as http:
        for path in (*pages, f"/rq/0/data/job/{hostile}.json", "/rq/static/js/underscore-umd-min.js"):
            answer = http.get(path)
            assert answer.status_code == 200, path
            csp = answer.headers["Content-Security-Policy"]
            assert re.match(r"default-src 'none'; script-src 'self' 'nonce-[\w-]{24}' 'unsafe-eval'; ", csp)
            assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            if path in pages:
                # underscore's unescaped output tag appears in no template a page ships.
                assert "<%=" not in answer.text and "<%-" in answer.text, path
                nonce = re.search(r"'nonce-([\w-]+)'", csp)
                assert nonce and f'nonce="{nonce[1]}"' in answer.text
        assert http.get("/rq/").headers["Content-Security-Policy"] != csp, "one nonce per response"


def test_no_get_changes_state_in_rq(start_web: StartWeb, space: Space) -> None:
    web = start_web({"sec-fail": {"steps": {"boom": {"type": "Boom"}}}})
    handle = web.client.trigger("sec-fail")
    _wait_run(web, handle.run_id, RunStatus.Failed)
    job_id = _step_jobs(web, handle.run_id)["boom"]
    queue = space.settings.queue
    changing = (
        f"/rq/requeue/{queue}",
        f"/rq/job/{job_id}/requeue",
        f"/rq/job/{job_id}/delete",
        f"/rq/queue/{queue}/failed/empty",
        f"/rq/queue/{queue}/queued/empty",
        f"/rq/queue/{queue}/compact",
    )
    with web.http() as http:
        for path in changing:
            for method in ("GET", "HEAD"):
                answer = http.request(method, path)
                assert answer.status_code == 405, (method, path, answer.status_code)
                assert "POST" in answer.headers["Allow"]
    failed = FailedJobRegistry(queue, connection=space.redis)
    assert failed.get_job_ids() == [job_id]
    assert Job.exists(job_id, connection=space.redis)
    run = web.client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed
    assert [len(step.attempts or []) for step in run.steps or []] == [1], "no retry was queued"


def test_rq_dashboards_buttons_still_work_under_its_csp(
    start_web: StartWeb, space: Space, page: Page
) -> None:
    flaky = {"type": "Flaky", "inputs": {"key": "@triggerBody()?.key", "succeed_on": 2}}
    web = start_web({"sec-flaky": {"steps": {"ship": flaky}}})
    refusals = _watch_csp(page)

    one = web.client.trigger("sec-flaky", data={"key": f"{space.token}:one"})
    _wait_run(web, one.run_id, RunStatus.Failed)
    page.goto(web.url(f"/rq/0/view/job/{_step_jobs(web, one.run_id)['ship']}"))
    page.get_by_role("button", name="Requeue").click()
    _wait_run(web, one.run_id, RunStatus.Succeeded)

    two = web.client.trigger("sec-flaky", data={"key": f"{space.token}:two"})
    _wait_run(web, two.run_id, RunStatus.Failed)
    page.goto(web.url(f"/rq/0/view/jobs/{space.settings.queue}/failed/8/asc/1"))
    expect(page.locator("#jobs tr[data-role=job]")).to_have_count(1)
    page.get_by_role("link", name="Requeue All").click()
    page.locator("#confirmation-modal-yes").click()
    _wait_run(web, two.run_id, RunStatus.Succeeded)
    assert refusals == []


def test_a_job_rq_no_longer_holds_answers_404_with_the_way_to_its_run(
    start_web: StartWeb, space: Space
) -> None:
    web = start_web({"sec-echo": {"steps": {"a": {"type": "Echo"}}}})
    handle = web.client.trigger("sec-echo")
    _wait_run(web, handle.run_id, RunStatus.Succeeded)
    with web.http() as http:
        links = http.get(f"/flows/api/runs/{handle.run_id}").headers["Link"]
        job_url = re.search(r'<([^>]+)>; rel="job"; title="step a"', links)
        assert job_url is not None
        job_id = job_url[1].rsplit("/", 1)[1]
        Job.fetch(job_id, connection=space.redis, serializer=JSONSerializer).delete()  # RQ's TTL ran out

        answer = http.get(urlsplit(job_url[1]).path)
        assert answer.status_code == 404
        assert f'href="/flows/jobs/{job_id}"' in answer.text and "Traceback" not in answer.text
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        data = http.get(f"/rq/0/data/job/{job_id}.json")
        assert data.status_code == 404 and data.json()["link"] == f"/flows/jobs/{job_id}"
        # The link leads to the run, which keeps the step's record.
        run_page = http.get(data.json()["link"], follow_redirects=True)
        assert (
            run_page.status_code == 200 and urlsplit(str(run_page.url)).path == f"/flows/runs/{handle.run_id}"
        )
        assert http.get("/rq/1/view/queues").status_code == 404, "only instance 0 is configured"


def test_rq_answers_503_while_redis_is_unreachable(start_web: StartWeb) -> None:
    down = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    web = start_web({}, env=down, worker=False, health_status=503)
    reads = ("/rq/", "/rq/0/view/jobs", "/rq/0/view/workers", "/rq/0/view/job/x")
    data = ("/rq/0/data/queues.json", "/rq/0/data/workers.json", "/rq/0/data/job/x.json")
    # The dashboard's own pages send their Origin (the web process refuses /rq POSTs without one).
    with web.http(headers={"Origin": web.base}) as http:
        for path in (*reads, *data):
            answer = http.get(path)
            assert answer.status_code == 503, (path, answer.status_code)
            assert "Redis is unreachable" in answer.text and "Traceback" not in answer.text
        assert http.post("/rq/requeue/q").status_code == 503
        assert http.post("/rq/job/x/requeue").status_code == 503


def test_rq_answers_other_redis_errors_500_with_an_error_id_it_logs(
    start_web: StartWeb, space: Space, capfd: pytest.CaptureFixture[str]
) -> None:
    web = start_web({}, worker=False)
    job_id = f"{space.token}-wrongtype"
    space.redis.set(f"rq:job:{job_id}", "not a hash")  # WRONGTYPE for RQ's HGETALL
    logged = ""
    with web.http() as http:
        for path in (f"/rq/0/data/job/{job_id}.json", f"/rq/0/view/job/{job_id}"):
            answer = http.get(path)
            assert answer.status_code == 500 and "Traceback" not in answer.text
            error_id = re.search(r"Error id ([0-9a-f]{32})", answer.text)
            assert error_id is not None, answer.text

            def in_log(error_id: str = error_id[1]) -> bool:
                nonlocal logged
                logged += capfd.readouterr().err
                return error_id in logged

            wait_until(in_log, timeout=10, what="the error id in the web process's log")
    assert "WRONGTYPE" in logged
