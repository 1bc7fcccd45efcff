"""Pure tests of flow files: strict parsing (versions, duplicate keys, numbers) and folders with a
bad file in them (no Redis)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flowjobs.core.errors import FlowNotFound, FlowValidationError
from flowjobs.core.registry import FlowRegistry, parse_flow_file

GOOD = textwrap.dedent(
    """\
    id: 11111111-1111-4111-8111-111111111111
    name: good-flow
    version: "1.10"
    steps:
      a: {type: A}
    """
)


def problems_of(path: Path) -> list[str]:
    """The problems ``parse_flow_file`` raises for a file that must be refused."""
    with pytest.raises(FlowValidationError) as info:
        parse_flow_file(path)
    return info.value.problems


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- versions


def test_a_quoted_version_is_kept_verbatim(tmp_path: Path) -> None:
    assert parse_flow_file(write(tmp_path, "good.yaml", GOOD)).version == "1.10"


@pytest.mark.parametrize(("suffix", "version"), [(".yaml", "1.10"), (".yml", "2"), (".json", "1.10")])
def test_an_unquoted_number_as_version_is_refused(tmp_path: Path, suffix: str, version: str) -> None:
    # YAML and JSON parse 1.10 as the float 1.1: the written text is lost, so refuse it.
    if suffix == ".json":
        text = f'{{"id": "11111111-1111-4111-8111-111111111111", "name": "f", "version": {version},'
        text += ' "steps": {"a": {"type": "A"}}}'
    else:
        text = GOOD.replace('version: "1.10"', f"version: {version}")
    [problem] = problems_of(write(tmp_path, f"flow{suffix}", text))
    assert problem.startswith("version must be a string, not the number")
    assert 'quote it (version: "1.10"' in problem


# ---------------------------------------------------------------- duplicate keys


def test_a_duplicate_top_level_key_in_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    text = GOOD + "name: other-name\n"
    [problem] = problems_of(write(tmp_path, "dup.yaml", text))
    assert problem == "cannot read the file: line 6: duplicate key 'name' (first at line 2)"


def test_a_duplicate_step_key_in_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.yaml",
        """\
        id: 11111111-1111-4111-8111-111111111111
        name: f
        steps:
          fetch: {type: Fetch}
          ship: {type: Ship, run_after: [fetch]}
          fetch: {type: Other}
        """,
    )
    [problem] = problems_of(path)
    assert "line 6: duplicate key 'fetch' (first at line 4)" in problem


def test_a_duplicate_key_in_a_flow_mapping_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("a: {type: A}", "a: {type: A, type: B}")
    [problem] = problems_of(write(tmp_path, "dup.yaml", text))
    assert "line 5: duplicate key 'type'" in problem


def test_a_yaml_merge_key_may_be_overridden(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "merge.yaml",
        """\
        id: 11111111-1111-4111-8111-111111111111
        name: f
        steps:
          a: &base {type: A, inputs: {size: 1}}
          b: {<<: *base, type: B, run_after: [a]}
        """,
    )
    flow = parse_flow_file(path)
    assert flow.manifest.steps["b"].type == "B" and flow.manifest.steps["b"].inputs == {"size": 1}


def test_a_duplicate_key_in_json_is_refused(tmp_path: Path) -> None:
    text = (
        '{"id": "11111111-1111-4111-8111-111111111111", "name": "f",'
        ' "steps": {"a": {"type": "A"}, "a": {"type": "B"}}}'
    )
    [problem] = problems_of(write(tmp_path, "dup.json", text))
    assert problem == "cannot read the file: duplicate key 'a'"


def test_a_yaml_syntax_error_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "broken.yaml", "name: [unclosed\n  steps: {"))
    assert problem.startswith("cannot read the file: line 2: ") and "\n" not in problem


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("step", "where", "limit"),
    [
        ("timeout_seconds: .inf", "steps.a.timeout_seconds", "> 0 and <= 604800"),
        ("timeout_seconds: 1e12", "steps.a.timeout_seconds", "> 0 and <= 604800"),
        ("timeoutSeconds: .nan", "steps.a.timeoutSeconds", "> 0 and <= 604800"),
        ("retry: {max_attempts: .inf}", "steps.a.retry.max_attempts", "an integer >= 1 and <= 10000"),
        ("retry: {backoff_seconds: .inf}", "steps.a.retry.backoff_seconds", ">= 0 and <= 604800"),
        ("retry: {backoff_factor: 1e300}", "steps.a.retry.backoff_factor", ">= 1 and <= 100"),
        ("retry: {max_backoff_seconds: -.inf}", "steps.a.retry.max_backoff_seconds", ">= 0 and <= 604800"),
        ("poll: {interval_seconds: .inf}", "steps.a.poll.interval_seconds", "> 0 and <= 604800"),
        ("poll: {timeout_seconds: 1e9}", "steps.a.poll.timeout_seconds", "> 0 and <= 604800"),
        ("poll: {min_attempts: 100000}", "steps.a.poll.min_attempts", "an integer >= 1 and <= 10000"),
    ],
)
def test_numbers_in_a_flow_file_must_be_finite_and_bounded(
    tmp_path: Path, step: str, where: str, limit: str
) -> None:
    text = GOOD.replace("a: {type: A}", f"a: {{type: A, {step}}}")
    registry = FlowRegistry()
    with pytest.raises(FlowValidationError) as info:
        registry.add_file(write(tmp_path, "numbers.yaml", text))
    [problem] = info.value.problems
    assert problem.startswith(f"{where}: must be ") and problem.endswith(limit)
    assert len(registry) == 0


def test_a_foreach_concurrency_limit_is_bounded(tmp_path: Path) -> None:
    text = GOOD.replace(
        "a: {type: A}",
        "a: {type: ForEach, forEach: [1], concurrencyLimit: 1000000, steps: {x: {type: X}}}",
    )
    [problem] = problems_of(write(tmp_path, "loop.yaml", text))
    assert problem == "steps.a.concurrencyLimit: must be an integer >= 1 and <= 10000"


def test_a_wait_for_signal_timeout_must_be_finite_and_bounded(tmp_path: Path) -> None:
    text = GOOD.replace(
        "a: {type: A}", "a: {type: WaitForSignal, inputs: {signalName: go, timeoutSeconds: .inf}}"
    )
    with pytest.raises(FlowValidationError) as info:
        FlowRegistry().add_file(write(tmp_path, "wait.yaml", text))
    assert info.value.problems == [
        "step 'a': inputs.timeoutSeconds of a WaitForSignal step must be a finite number > 0 and <= 2592000"
    ]


# ---------------------------------------------------------------- size bounds


def alias_bomb(levels: int) -> str:
    """A flow whose step input expands to 10**levels strings through nested aliases (< 1 KB)."""
    lines = ["id: 11111111-1111-4111-8111-111111111111", "name: bomb", "steps:", "  a:", "    type: A"]
    lines += ["    inputs:", "      x0: &x0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"      x{level}: &x{level} [{', '.join([f'*x{level - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = write(tmp_path, "bomb.yaml", alias_bomb(7))
    assert bomb.stat().st_size < 1024
    assert problems_of(bomb) == [
        "cannot read the file: it expands to more than 100000 YAML nodes (aliases count as copies)"
    ]


def test_a_few_aliases_and_merges_are_fine(tmp_path: Path) -> None:
    inputs = parse_flow_file(write(tmp_path, "small.yaml", alias_bomb(3))).manifest.steps["a"].inputs
    assert len(inputs["x3"]) == 10 and inputs["x3"][9][9] == [["lol"]] * 10


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    loop = write(tmp_path, "loop.yaml", GOOD + "x: &x [*x]\n")
    assert problems_of(loop) == ["cannot read the file: line 6: an alias refers to a node it is inside of"]


def test_a_flow_file_over_a_megabyte_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "# " + "x" * 1024 * 1024 + "\n")
    assert problems_of(big) == ["cannot read the file: it is larger than 1048576 bytes"]


# ---------------------------------------------------------------- folders with a bad file


def bad_folder(tmp_path: Path) -> Path:
    write(tmp_path, "a-good.yaml", GOOD)
    write(
        tmp_path,
        "b-bad.yaml",
        GOOD.replace("good-flow", "bad-flow")
        .replace("{type: A}", "{type: A, run_after: [x]}")
        .replace("11111111-1111-4111-8111-111111111111", "44444444-4444-4444-8444-444444444444"),
    )
    write(tmp_path, "c-broken.json", "{not json")
    return tmp_path


def test_lenient_load_dir_registers_the_good_files_and_keeps_the_bad_ones_problems(tmp_path: Path) -> None:
    folder = bad_folder(tmp_path)
    registry = FlowRegistry()
    loaded = registry.load_dir(folder, strict=False)
    assert [flow.name for flow in loaded] == ["good-flow"]
    assert [flow.name for flow in registry.all()] == ["good-flow"]
    assert list(registry.invalid_files) == [folder / "b-bad.yaml", folder / "c-broken.json"]
    assert registry.invalid_files[folder / "b-bad.yaml"] == [
        "step 'a': run_after names 'x', which is not a step of this flow",
        "no entry step (a step with an empty run_after)",
    ]
    assert registry.invalid_files[folder / "c-broken.json"][0].startswith("cannot read the file:")
    with pytest.raises(FlowNotFound):
        registry.get("bad-flow")


def test_strict_load_dir_still_raises_and_also_records_the_bad_files(tmp_path: Path) -> None:
    folder = bad_folder(tmp_path)
    registry = FlowRegistry()
    with pytest.raises(FlowValidationError) as info:
        registry.load_dir(folder)
    assert {p.split(":", 1)[0] for p in info.value.problems} == {"b-bad.yaml", "c-broken.json"}
    assert set(registry.invalid_files) == {folder / "b-bad.yaml", folder / "c-broken.json"}
    assert [flow.name for flow in registry.all()] == ["good-flow"]


def test_a_fixed_file_leaves_invalid_files_on_the_next_load(tmp_path: Path) -> None:
    folder = bad_folder(tmp_path)
    registry = FlowRegistry()
    registry.load_dir(folder, strict=False)
    (folder / "c-broken.json").write_text(
        json.dumps(
            {"id": "33333333-3333-4333-8333-333333333333", "name": "fixed", "steps": {"a": {"type": "A"}}}
        )
    )
    registry.load_dir(folder, strict=False)
    assert list(registry.invalid_files) == [folder / "b-bad.yaml"]
    assert [flow.name for flow in registry.all()] == ["fixed", "good-flow"]
