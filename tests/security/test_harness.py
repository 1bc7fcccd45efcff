"""The security tests' harness itself: ``flowjobs web`` starts for a test and serves its flows."""

from __future__ import annotations

from tests.security.conftest import StartWeb


def test_flowjobs_web_serves_the_tests_flows(start_web: StartWeb) -> None:
    web = start_web({"sec-hello": {"steps": {"a": {"type": "Noop"}}}}, worker=False)
    with web.http() as http:
        names = [flow["name"] for flow in http.get("/flows/api/flows").json()]
    assert names == ["sec-hello"]
