"""Step keys in the API's ``Link`` header: any key a flow may hold gives a well-formed header, and a
key that could break a header (quotes, CR/LF, angle brackets) is refused when the flow is loaded."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from flowjobs.core.errors import FlowValidationError
from flowjobs.core.registry import FlowRegistry
from tests.conftest import Space, wait_until
from tests.security.conftest import StartWeb

#: One RFC 8288 link-value as the API writes it: a URI-Reference in <>, then parameters whose values
#: are tokens, quoted-strings or RFC 8187 ext-values.
LINK_VALUE = re.compile(
    r"""<[!#-;=?-\[\]_a-z~]*>(?:; [a-z]+\*?=(?:"[^"\\\x00-\x1f\x7f]*"|[!#-+\--:<-~]+))*"""
)


def test_a_non_latin_step_key_gives_a_well_formed_link_header(start_web: StartWeb) -> None:
    web = start_web({"shipping": {"steps": {"発送": {"type": "Echo", "inputs": {"x": 1}}}}})
    with web.http() as http:
        run_id = http.post("/flows/api/flows/shipping/trigger", json={}).json()["runId"]
        wait_until(
            lambda: (run := web.client.get_run(run_id)) is not None and run.status.value == "Succeeded",
            what="the run to succeed",
        )
        answer = http.get(f"/flows/api/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    header = answer.headers["Link"]
    values = header.split(", ")
    assert all(LINK_VALUE.fullmatch(value) for value in values), header
    [step] = [value for value in values if "title*=" in value]
    assert step.endswith("; title*=UTF-8''step%20%E7%99%BA%E9%80%81")
    assert unquote(step.rsplit("''", 1)[1]) == "step 発送"
    assert f'</flows/runs/{run_id}>; rel="run"' in values


@pytest.mark.parametrize("key", ['say"hi', "a\r\nb", "<a>", "a>b", "a.b", "a b"])
def test_a_step_key_that_could_break_a_header_is_refused_at_load(
    space: Space, tmp_path: Path, key: str
) -> None:
    flow = {"id": str(uuid.uuid4()), "name": "bad-key", "steps": {key: {"type": "Noop"}}}
    path = tmp_path / "bad-key.yaml"
    path.write_text(yaml.safe_dump(flow))

    validated = space.cli("flows", "validate", str(path))
    assert validated.returncode == 2, validated.stdout + validated.stderr
    assert "a step key holds only letters, digits, '_' and '-'" in validated.stderr

    with pytest.raises(FlowValidationError) as refused:
        FlowRegistry().add_file(path)
    assert any(repr(key) in problem and "step key" in problem for problem in refused.value.problems)
