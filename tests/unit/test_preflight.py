"""Whether a launch may start (ugro.preflight), from health reports shaped as the probe's."""

from __future__ import annotations

from ugro.core.layout import JOB_ID_PATTERN
from ugro.launch.refusals import launch_refusals

HOSTS = ["gpu-master", "gpu1", "gpu2"]


def report(lock: str = "a" * 64, **extra: object) -> dict:
    return {"lock_hash": lock, "env": {"torch_version": "2.13.0+cpu"}, **extra}


def hostvars(**overrides: dict) -> dict:
    reports = {"gpu-master": report(free_port=29500), "gpu1": report(), "gpu2": report()}
    reports.update(overrides)
    return {host: {"ugro_health_report": r} for host, r in reports.items()}


def request(**overrides: object) -> dict:
    return {
        "job_id": "exp1_20261129_101010",
        "id_pattern": JOB_ID_PATTERN,
        "script": "scripts/train_production.py",
        "allow_drift": False,
        "master_addr": "10.0.0.1",
        "master_port": 29500,
        **overrides,
    }


def refusals(variables: dict, hosts=HOSTS, **overrides: object) -> list[str]:
    return launch_refusals(
        variables, hosts=hosts, all_hosts=HOSTS, lead="gpu-master", request=request(**overrides)
    )


def test_a_healthy_cluster_may_launch() -> None:
    assert refusals(hostvars()) == []


def test_each_refusal_names_what_is_wrong() -> None:
    assert refusals(hostvars(), job_id="-oProxyCommand_20261129_101010") == [
        "'-oProxyCommand_20261129_101010' is not a job id"
    ]
    assert refusals(hostvars(), script="../../etc/passwd") == [
        "'../../etc/passwd' is not a path in the job's code"
    ]
    assert refusals(hostvars(), hosts=["gpu-master", "gpu1"]) == [
        "not launching: gpu2 failed the preflight"
    ]
    assert refusals(hostvars(**{"gpu-master": report(free_port=None)})) == [
        "no free port from 29500 up on 10.0.0.1"
    ]
    assert launch_refusals(
        hostvars(), hosts=["gpu1"], all_hosts=["gpu1"], lead="gpu-master", request=request()
    ) == ["the lead node (gpu-master) must take part: it hosts the rendezvous"]
    # A job on workers alone is led by its first worker, which needs the free port.
    assert launch_refusals(
        hostvars(gpu1=report(free_port=None)),
        hosts=["gpu1", "gpu2"],
        all_hosts=["gpu1", "gpu2"],
        lead="gpu1",
        request=request(),
    ) == ["no free port from 29500 up on 10.0.0.1"]


def test_drift_refuses_unless_allowed() -> None:
    drifting = hostvars(gpu2=report(lock="b" * 64))
    (refusal,) = refusals(drifting)
    assert refusal.startswith("not launching on drifting environments (--allow-drift")
    assert "lock differs across nodes" in refusal and "gpu2=bbbbbbbbbbbb" in refusal
    assert refusals(drifting, allow_drift=True) == []
