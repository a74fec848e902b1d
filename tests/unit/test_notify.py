"""Notifications: the user's argv run with the event in its environment, never a secret."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ugro.daemon.notify import notify

RECORD = """\
import json, os, sys
keep = {k: v for k, v in os.environ.items() if k.startswith("UGRO_") or k == "HF_TOKEN"}
open(sys.argv[1], "w").write(json.dumps({"argv": sys.argv[2:], "env": keep}))
"""


def test_the_command_gets_the_event_and_no_secret(cluster, tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    out = tmp_path / "event.json"
    # An argument with shell syntax stays one argument: nothing runs through a shell.
    command = (sys.executable, str(script), str(out), "$(touch /tmp/pwned);")
    cluster = replace(cluster, daemon=replace(cluster.daemon, notify_command=command))
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    thread = notify(
        cluster, "job_ended", job_id="a_20260101_000000", job_state="failed", reason="exit 1\nboom"
    )
    assert thread is not None
    thread.join(30)
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["$(touch /tmp/pwned);"]
    assert "HF_TOKEN" not in seen["env"]
    assert seen["env"]["UGRO_EVENT"] == "job_ended"
    assert seen["env"]["UGRO_JOB_ID"] == "a_20260101_000000"
    assert seen["env"]["UGRO_JOB_STATE"] == "failed"
    assert seen["env"]["UGRO_REASON"] == "exit 1 boom"  # one line
    assert seen["env"]["UGRO_CLUSTER"] == "t"
    assert not Path("/tmp/pwned").exists()


def test_no_command_no_notification(cluster) -> None:
    assert notify(cluster, "node_down", node="gpu1") is None
