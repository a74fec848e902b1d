"""The CLI's contract: one clear line and exit 2 for bad input, never a traceback; fast help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_ugro


def test_help_imports_neither_ansible_nor_torch() -> None:
    code = (
        "import sys\n"
        "from ugro.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'ansible', 'ansible_runner', 'torch', 'transformers', 'rich', 'pydantic'})\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("cluster: [", "YAML syntax error"),
        (
            "cluster:\n  master:\n    hostname: a\n    ip: 10.0.0.1\n    user: 'x;reboot'\n",
            ":5: cluster.master.user: 'x;reboot' is not a valid user name",
        ),
        ("nothing: here\n", "unknown key; expected one of: cluster, workers"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    for command in (["health"], ["inventory"], ["status"]):
        done = run_ugro("--config", str(path), *command)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr + done.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    done = run_ugro("--config", str(tmp_path / "absent.yaml"), "health")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"ugro: {tmp_path}/absent.yaml: no such file (named by --config); expected a cluster.yaml"
    )


@pytest.mark.parametrize("job", ["../x", "a;rm -rf ~", "", "x" * 65, "..", "a b", "-oProxyCommand"])
def test_hostile_job_names_are_refused_before_anything_runs(tmp_path: Path, job: str) -> None:
    done = run_ugro("run", "health", "--", job, cwd=tmp_path)
    assert done.returncode == 2
    assert "job name" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_bad_extra_var_and_playbook(tmp_path: Path) -> None:
    done = run_ugro("run", "health", "-e", "not a pair", cwd=tmp_path)
    assert done.returncode == 2 and "expected key=value" in done.stderr
    done = run_ugro("run", "no-such-playbook", cwd=tmp_path)
    assert done.returncode == 2 and "no playbook 'no-such-playbook'" in done.stderr


def test_unknown_node(tmp_path: Path) -> None:
    done = run_ugro("health", "--node", "gpu9", cwd=tmp_path)
    assert done.returncode == 2
    assert "no node named 'gpu9'" in done.stderr


def test_inventory_json_is_the_listing(tmp_path: Path) -> None:
    import json

    done = run_ugro("inventory", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["master"]["hosts"] == ["local"]


@pytest.mark.parametrize("name", ["../x", "a;rm -rf ~", "x" * 65, "-oProxyCommand", "-"])
def test_launch_refuses_a_bad_name_before_writing_anything(tmp_path: Path, name: str) -> None:
    done = run_ugro("launch", "--name", name, cwd=tmp_path, env={"UGRO_HOME": str(tmp_path / "h")})
    assert done.returncode == 2
    assert "job name" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "h").exists()


def test_sandbox_needs_root_and_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-root session cannot exist in this root-only workplace: euid is the stand-in here."""
    from ugro.core.errors import ExitCode, PrerequisiteError
    from ugro.sandbox import system

    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system, "which", lambda tool: None if tool == "sshd" else f"/bin/{tool}")
    with pytest.raises(PrerequisiteError) as caught:
        system.check_prerequisites()
    message = caught.value.message
    assert message.startswith("ugro sandbox needs root, sshd (openssh-server) on this machine")
    assert "the built-in local cluster works without them" in message.lower()
    assert caught.value.exit_code == ExitCode.USAGE


def test_progress_off_a_terminal_is_a_line_per_task_in_words() -> None:
    from rich.console import Console

    from ugro.display import progress as display

    assert display.task_title({"task": "Launch | Start the job"}) == "Start the job"
    assert display.task_title({"task": "Validating arguments against arg spec 'main'"}) is None
    assert display.task_title({"task": "Gathering Facts"}) == "Gather facts"
    console = Console(record=True, width=40, force_terminal=False)
    original = display.err_console
    display.err_console = console
    try:
        with display.RunProgress("launch", 2) as progress:
            assert progress.plain
            progress({"event": "playbook_on_task_start", "event_data": {"task": "X | Do one"}})
            progress(
                {
                    "event": "playbook_on_task_start",
                    "event_data": {"task": "Validating arguments against arg spec 'main'"},
                }
            )
            progress(
                {
                    "event": "runner_on_failed",
                    "event_data": {"host": "gpu1", "task": "X | Do one", "res": {}},
                }
            )
    finally:
        display.err_console = original
    assert console.export_text().splitlines() == ["launch: Do one", "launch: gpu1 failed: Do one"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "--name", "../x"], "'../x'"),
        (["submit", "--name", "a;rm -rf ~"], "'a;rm -rf ~'"),
        (["submit", "--name", "s", "--sweep", "lr=1;rm -rf ~"], "(not '1;rm -rf ~')"),
        (["submit", "--name", "s", "--sweep", "lr=1", "--sweep", "lr=2"], "given twice"),
        (["submit", "--name", "s", "--nodes", "nosuch"], "nosuch"),
        (["submit", "--name", "s", "--min-vram", "8"], "--min-vram goes with --node-count"),
        (["submit", "--name", "s", "--nodes", "m", "--node-count", "1"], "not both"),
        (["submit", "--name", "s", "--node-count", "5"], "--node-count 5"),
        (["submit", "--name", "s", "--script", "/nonexistent/x.py"], "no such file"),
        (["cancel", "a;rm -rf ~"], "'a;rm -rf ~'"),
        (["cancel", "nosuch"], "no job named 'nosuch'"),
        (["queue", "--pause", "--resume"], "--pause or --resume, not both"),
        (["health", "--history", "--node", "nosuch"], "nosuch"),
        (["plot", "../x"], "'../x'"),
        (["plot", "nosuch"], "no job named 'nosuch'"),
        (["compare", "a;rm -rf ~", "b"], "'a;rm -rf ~'"),
    ],
)
def test_bad_queue_input_is_one_line_exit_2(cluster, args: list[str], expected: str) -> None:
    done = run_ugro("--config", str(cluster.source), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # Nothing was queued by a refused submit.
    from ugro.records.history import Jobs

    assert Jobs(cluster).records() == {}


def test_daemon_status_without_a_daemon_says_so(cluster) -> None:
    done = run_ugro("--config", str(cluster.source), "daemon", "status")
    assert done.returncode == 1 and "No daemon runs for" in done.stdout
    stopped = run_ugro("--config", str(cluster.source), "daemon", "stop")
    assert stopped.returncode == 0 and "No daemon runs" in stopped.stdout


def test_plot_and_compare_refuse_what_they_cannot_do(cluster, tmp_path: Path) -> None:
    from ugro.records.history import Jobs

    jobs = Jobs(cluster)
    jobs.create("only_20260101_000000")
    jobs.record("only_20260101_000000", "launching")
    config = ("--config", str(cluster.source))
    for args, expected in (
        (["compare", "only"], "compare needs two jobs or more; only names one"),
        (["plot", "only"], "nothing to plot for only_20260101_000000"),
        (["plot", "only", "-o", str(tmp_path / "x.txt")], "x.txt: expected a .png, .svg or .pdf"),
    ):
        done = run_ugro(*config, *args)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
