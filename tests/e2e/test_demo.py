"""The README's first command, from a fresh copy of the checkout, no venv, no Redis at REDIS_URL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def _checkout_copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_readme_demo_command_in_a_clean_checkout_prints_a_succeeded_run(tmp_path: Path) -> None:
    checkout = tmp_path / "flowjobs"
    _checkout_copy(checkout)
    assert not (checkout / ".venv").exists()
    # Nothing answers on port 1, so the demo must start its own embedded server.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "embedded server started" in done.stderr
    assert re.search(r"^run [0-9a-f-]{36}  Succeeded$", done.stdout, re.MULTILINE), done.stdout
    record = json.loads(done.stdout[done.stdout.index("\n{") : done.stdout.index("\n}") + 2])
    assert record["status"] == "Succeeded"
    assert record["backgroundJobId"] == f"fj-{record['id']}-trigger"
    assert "flowjobs runs show " + record["id"] in done.stdout
    assert "/view/job/" + record["backgroundJobId"] in done.stdout
