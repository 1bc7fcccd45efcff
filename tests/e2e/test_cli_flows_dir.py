"""The flowjobs command with bad configuration: an invalid flow file among good ones, a handler
module that cannot be imported, and settings or data out of bounds. Each is one line on stderr
and a non-zero exit, and never stops commands that do not need the bad part."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, Space

GOOD_FLOW = textwrap.dedent(
    """\
    id: 4c1e9f0a-7b2d-4e8a-9c3f-1a2b3c4d5e6f
    name: good-flow
    version: "1.10"
    steps:
      a: {type: Noop}
    """
)
BAD_FLOW = textwrap.dedent(
    """\
    id: 5d2fa01b-8c3e-4f9b-8d40-2b3c4d5e6f70
    name: bad-flow
    steps:
      a: {type: Noop, run_after: [ghost]}
    """
)
BAD_PROBLEMS = [
    "step 'a': run_after names 'ghost', which is not a step of this flow",
    "no entry step (a step with an empty run_after)",
]


@pytest.fixture
def flows_dir(tmp_path: Path) -> dict[str, str]:
    """A flows folder with one good and one invalid file, as the environment of ``space.cli``."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD_FLOW)
    (folder / "bad.yaml").write_text(BAD_FLOW)
    return {"FLOWJOBS_FLOWS_DIR": str(folder)}


def test_a_bad_flow_file_does_not_stop_triggering_a_good_flow(
    space: Space, flows_dir: dict[str, str]
) -> None:
    done = space.cli("trigger", "good-flow", "--json", env=flows_dir)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["flowName"] == "good-flow" and run["flowVersion"] == "1.10"
    assert "warning: invalid flow file" in done.stderr and "bad.yaml" in done.stderr
    assert "; ".join(BAD_PROBLEMS) in done.stderr

    bad = space.cli("trigger", "bad-flow", env=flows_dir)
    assert bad.returncode == 2 and "no flow with id or name 'bad-flow'" in bad.stderr


def test_reading_history_does_not_read_the_flow_files(space: Space, flows_dir: dict[str, str]) -> None:
    run = json.loads(space.cli("trigger", "good-flow", "--json", env=flows_dir).stdout)
    listed = space.cli("runs", "list", "--json", env=flows_dir)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
    assert listed.stderr == ""
    by_id = space.cli("runs", "list", "--flow", run["flowId"], env=flows_dir)
    assert by_id.returncode == 0 and run["id"] in by_id.stdout and by_id.stderr == ""
    by_name = space.cli("runs", "list", "--flow", "good-flow", env=flows_dir)
    assert by_name.returncode == 0 and run["id"] in by_name.stdout
    shown = space.cli("runs", "show", run["id"], env=flows_dir)
    assert shown.returncode == 0 and f"run {run['id']}  Pending" in shown.stdout


def test_flows_list_marks_the_bad_file_invalid(space: Space, flows_dir: dict[str, str]) -> None:
    human = space.cli("flows", "list", env=flows_dir)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("good-flow ") and "v1.10" in lines[0]
    assert lines[1].startswith("bad.yaml ") and "INVALID" in lines[1]
    assert lines[2:] == [f"  - {problem}" for problem in BAD_PROBLEMS]

    as_json = space.cli("flows", "list", "--json", env=flows_dir)
    assert as_json.returncode == 0, as_json.stderr
    good, bad = json.loads(as_json.stdout)
    assert good["name"] == "good-flow" and good["valid"] is True
    assert bad == {
        "file": str(Path(flows_dir["FLOWJOBS_FLOWS_DIR"]) / "bad.yaml"),
        "valid": False,
        "problems": BAD_PROBLEMS,
    }

    validated = space.cli("flows", "validate", env=flows_dir)
    assert validated.returncode == 2
    assert all(f"bad.yaml: {problem}" in validated.stderr for problem in BAD_PROBLEMS)


@pytest.mark.parametrize(
    ("module_code", "cause"),
    [
        (None, "ModuleNotFoundError: No module named 'nonexistent'"),
        ("raise RuntimeError('database is down')\n", "RuntimeError: database is down"),
    ],
)
def test_a_handler_module_that_cannot_be_imported_stops_the_worker_with_one_line(
    space: Space, tmp_path: Path, module_code: str | None, cause: str
) -> None:
    env = {"FLOWJOBS_HANDLER_MODULES": "tests.handlers,nonexistent.module"}
    if module_code is not None:
        (tmp_path / "broken_handlers.py").write_text(module_code)
        env = {"FLOWJOBS_HANDLER_MODULES": "broken_handlers", "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    name = env["FLOWJOBS_HANDLER_MODULES"].split(",")[-1]
    done = space.cli("worker", "--burst", env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot import handler module {name!r} (FLOWJOBS_HANDLER_MODULES): {cause}"
    ]


@pytest.mark.parametrize(
    ("name", "value", "limit"),
    [
        ("FLOWJOBS_RUN_TIMEOUT_SECONDS", "inf", "a finite number > 0 and <= 2592000"),
        ("FLOWJOBS_RETENTION_DAYS", "inf", "a finite number > 0 and <= 3650"),
    ],
)
def test_an_unbounded_setting_stops_the_command_naming_it(
    space: Space, name: str, value: str, limit: str
) -> None:
    done = space.cli("runs", "list", env={name: value})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{name}: must be {limit}" in done.stderr


def test_trigger_data_out_of_bounds_is_refused_with_exit_2(space: Space) -> None:
    huge = space.cli("trigger", "hello-flow", "--data", '{"runTimeoutSeconds": 1e12}')
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
    assert "runTimeoutSeconds in the trigger data must be a finite number > 0 and <= 2592000" in huge.stderr

    deep = space.cli("trigger", "hello-flow", "--data", "[" * 100 + "]" * 100)
    assert deep.returncode == 2 and "Traceback" not in deep.stderr
    assert "trigger data is nested 100 levels deep; the limit is 64" in deep.stderr

    deeper = space.cli("trigger", "hello-flow", "--data", "[" * 5000 + "]" * 5000)
    assert deeper.returncode == 2 and "Traceback" not in deeper.stderr
    assert "nested too deeply" in deeper.stderr

    listed = space.cli("runs", "list", "--json")
    assert json.loads(listed.stdout) == []
