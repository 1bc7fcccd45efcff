"""The flows UI's notices (what a page says after an action) cannot be written by a link: only
known codes, filled with what the page itself checked; a refused action shows its page with the
error, the text never in a URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from playwright.sync_api import Page, expect

from tests.security.conftest import StartWeb

PHISHING = "Your session expired, log in at https://evil.example"
FLOWS: dict[str, dict[str, Any]] = {
    "note-wait": {
        "steps": {
            "quote": {"type": "Noop"},
            "wait": {"type": "WaitForSignal", "run_after": ["quote"], "inputs": {"signalName": "approved"}},
        }
    },
}



def test_a_link_cannot_make_a_page_say_anything(start_web: StartWeb, page: Page) -> None:
    web = start_web(FLOWS)
    run_id = web.parked("note-wait")
    links = [
        {"notice": PHISHING, "kind": "error"},
        {"notice": PHISHING},
        {"done": PHISHING},
        # Known codes whose values are not this page's to vouch for.
        {"done": "retried", "step": PHISHING},
        {"done": "signal-resumed", "signal": PHISHING},
        {"done": "enabled", "flow": PHISHING},
        {"done": "paused", "schedule": PHISHING},
        {"done": "rerun", "source": PHISHING},
    ]
    paths = ["/flows/", "/flows/flows", "/flows/runs", "/flows/schedules", f"/flows/runs/{run_id}"]
    with web.http() as http:
        for path in paths:
            for params in links:
                answer = http.get(path, params=params)
                assert answer.status_code == 200, (path, params)
                assert "evil.example" not in answer.text and 'class="notice' not in answer.text, (
                    path,
                    params,
                )
    page.goto(web.url(f"/flows/?notice={PHISHING}&kind=error"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_text("evil.example")).to_have_count(0)
    # A known code with a value the page checked is still said.
    page.goto(web.url(f"/flows/runs/{run_id}?done=signal-kept&signal=approved"))
    expect(page.get_by_role("status").filter(has_text="Signal approved delivered")).to_be_visible()


def test_a_refused_action_shows_its_error_without_putting_it_in_the_url(
    start_web: StartWeb, page: Page
) -> None:
    web = start_web(FLOWS)
    run_id = web.parked("note-wait")
    page.goto(web.url(f"/flows/runs/{run_id}"))
    expect(page.locator("#live-status")).to_have_text("Live")
    # Delivered meanwhile from elsewhere: the page's form now sends it a second time.
    web.client.signal(run_id, "approved", {"by": "bob"})
    page.get_by_label("Payload (JSON, optional)").fill('{"by": "ada"}')
    with page.expect_response(lambda r: r.url.endswith("/signal")) as sent:
        page.get_by_role("button", name="Send signal").click()
    # 409 already delivered, or 404 once the resumed run has ended: refused either way.
    assert sent.value.status in (404, 409)
    expect(page.get_by_role("alert")).to_contain_text("signal")
    assert unquote(page.url) == web.url(f"/flows/runs/{run_id}")
    # The page stays live at its own address: the run's end shows without a reload.
    expect(page.locator("#live-run h1 .badge")).to_have_text("Succeeded")

    with web.http(headers={"Origin": web.base}) as http:
        answer = http.post(f"/flows/runs/{run_id}/cancel")
        assert answer.status_code == 409 and "location" not in answer.headers
        assert "only a Pending or Running run can be cancelled" in answer.text
        answer = http.post(f"/flows/runs/{run_id}/steps/quote/retry")
        assert answer.status_code == 409 and "location" not in answer.headers
