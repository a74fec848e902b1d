"""cluster.yaml: the seed's file loads as written; every bad file gets one line with FILE:LINE."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, SEED_CLUSTER
from ugro.config import load_cluster, load_cluster_file, local_cluster
from ugro.core.errors import ConfigError

MINIMAL = """\
cluster:
  name: test
  master:
    hostname: gpu-master
    ip: 10.0.0.1
    user: alice
workers:
  - name: gpu1
    hostname: gpu1
    ip: 10.0.0.2
    user: ob
    rank: 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith(str(path))
    return message.removeprefix(str(path))


def test_seed_cluster_loads_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "gpuadmin")
    cluster = load_cluster_file(SEED_CLUSTER)
    assert cluster.name == "Home AI Lab"
    assert [(n.name, n.rank, n.user) for n in cluster.nodes] == [
        ("gpu-master", 0, "gpuadmin"),
        ("gpu1", 1, "ob"),
        ("gpu2", 2, "ollie"),
    ]
    gpu1 = cluster.node("gpu1")
    assert gpu1.address == "192.168.1.101"
    assert gpu1.project_path == "/home/ob/projects/UGRO"
    assert gpu1.hardware["gpu_model"] == "RTX 4070"
    # The seed runs pixi environments named `main`.
    assert gpu1.python == "/home/ob/projects/UGRO/.pixi/envs/main/bin/python"
    assert cluster.paths.data == Path("~/projects/UGRO/data").expanduser()
    assert dict(cluster.launch.training)["lora.target_modules"] == ["q_proj", "v_proj"]
    # The master's ranks write into the master's experiment directory; a worker's go under
    # its own project.
    assert cluster.master.experiments_path == str(cluster.paths.experiments)
    assert gpu1.experiments_path == "/home/ob/projects/UGRO/data/experiments"
    assert cluster.paths.config == Path("~/projects/UGRO/config").expanduser()
    assert cluster.master.scripts_path == str(Path("~/projects/UGRO/scripts").expanduser())


def test_seed_file_is_shipped_verbatim_as_the_example() -> None:
    assert (REPO / "config" / "cluster.example.yaml").read_text() == SEED_CLUSTER.read_text()


def test_unset_user_falls_back_to_the_login_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    assert load_cluster_file(SEED_CLUSTER).master.user


def test_repository_default_is_the_local_cluster() -> None:
    cluster = load_cluster_file(REPO / "config" / "cluster.yaml")
    assert [n.name for n in cluster.nodes] == ["local"]
    assert cluster.master.connection == "local"
    assert cluster.paths.data == REPO / "data"


def test_no_file_means_the_builtin_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cluster = load_cluster()
    assert cluster.source is None
    assert cluster.master.connection == "local"
    assert cluster == local_cluster()


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user_file = tmp_path / "home" / ".config" / "ugro" / "cluster.yaml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text(MINIMAL.replace("name: test", "name: from-home"))
    assert load_cluster().name == "from-home"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cluster.yaml").write_text(
        MINIMAL.replace("name: test", "name: from-cwd")
    )
    assert load_cluster().name == "from-cwd"
    env_file = tmp_path / "env.yaml"
    env_file.write_text(MINIMAL.replace("name: test", "name: from-env"))
    monkeypatch.setenv("UGRO_CONFIG", str(env_file))
    assert load_cluster().name == "from-env"
    assert load_cluster(str(user_file)).name == "from-home"


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_cluster(str(tmp_path / "nope.yaml"))


def test_env_and_home_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTER_USER", "carol")
    text = MINIMAL.replace("user: alice", "user: ${CLUSTER_USER}") + textwrap.dedent("""\
        paths:
          project_root: ~/lab
        """)
    text = text.replace("    rank: 1\n", "    rank: 1\n    paths:\n      project: ~/work/UGRO\n")
    cluster = load_cluster_file(write(tmp_path, text))
    assert cluster.master.user == "carol"
    assert cluster.paths.project_root == Path("~/lab").expanduser()
    # A worker's ~ is the worker's home, not the master's.
    assert cluster.node("gpu1").project_path == "/home/ob/work/UGRO"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster: [\n", ":2: YAML syntax error"),
        ("- just\n- a list\n", ":1: the file must be a mapping"),
        (
            MINIMAL.replace("rank: 1", "rank: one"),
            ":12: workers[0].rank: Input should be a valid integer",
        ),
        (
            MINIMAL.replace("rank: 1", "rank: 1\n    colour: red"),
            ":13: workers[0].colour: unknown key; expected one of: name,",
        ),
        (
            MINIMAL.replace("rank: 1", "rank: 0"),
            ":12: workers[0].rank: 0 is the master's rank; ranks must be unique",
        ),
        (
            MINIMAL.replace("rank: 1", "rank: 5"),
            ":12: workers[0].rank: 5 is out of range; with 1 workers, ranks are 1..1",
        ),
        (
            MINIMAL.replace("user: ob", "user: 'a;rm -rf ~'"),
            ":11: workers[0].user: 'a;rm -rf ~' is not a valid user name",
        ),
        (
            MINIMAL.replace("user: ob", "user: -oProxyCommand=x"),
            ":11: workers[0].user: '-oProxyCommand=x' is not a valid user name",
        ),
        (
            MINIMAL.replace("hostname: gpu1", "hostname: '$(reboot)'"),
            ":9: workers[0].hostname: '$(reboot)' is not a valid host name",
        ),
        (
            MINIMAL.replace("ip: 10.0.0.2", "ip: '-oProxyCommand=evil'"),
            ":10: workers[0].ip: '-oProxyCommand=evil' is not an IP address",
        ),
        (
            MINIMAL.replace("ip: 10.0.0.2", "ip: 10.0.0.1"),
            ":10: workers[0].ip: 10.0.0.1:22 is already used by gpu-master",
        ),
        (
            MINIMAL.replace("name: gpu1", "name: gpu-master"),
            ":8: workers[0].name: 'gpu-master' is already used",
        ),
        (
            MINIMAL.replace("    user: alice", "    user: alice\n    port: 70000"),
            ":7: cluster.master.port: Input should be less than or equal to 65535",
        ),
        (
            MINIMAL.replace("user: alice", "user: ${UGRO_TEST_UNSET_VARIABLE}"),
            ":6: cluster.master.user: environment variable UGRO_TEST_UNSET_VARIABLE is not set",
        ),
        (MINIMAL.replace("  name: test\n", ""), ""),  # name has a default: this one loads
        (MINIMAL.replace("    ip: 10.0.0.1\n", ""), ":3: cluster.master.ip: required but missing"),
        (MINIMAL + "workers: []\n", ":13: duplicate key 'workers' (first at line 7)"),
        (
            MINIMAL.replace("rank: 1", "rank: 1\n    paths:\n      project: relative/dir"),
            ":14: workers[0].paths.project: 'relative/dir' must be absolute",
        ),
        (
            MINIMAL.replace("ip: 10.0.0.2", "ip: 10.0.0.2\n    accelerator: tpu"),
            ":11: workers[0].accelerator: Input should be 'cuda', 'cpu' or 'auto'",
        ),
        (
            MINIMAL.replace(
                "    user: alice\n", "    user: alice\n  communication:\n    backend: nccl\n"
            ),
            ":8: cluster.communication.backend: Input should be 'c10d' or 'static'",
        ),
        (
            MINIMAL + "logging:\n  format: '%(asctime)s %(nosuchfield)s'\n",
            ":14: logging.format: '%(asctime)s %(nosuchfield)s' is not a logging format",
        ),
        (
            MINIMAL + "training:\n  lora:\n    target_modules: [q_proj, 'v_proj,--x']\n",
            ":15: training.lora.target_modules[1]: 'v_proj,--x' is not a module name",
        ),
        (
            MINIMAL.replace("    user: alice\n", "    user: alice\n    paths:\n      scripts: /a\n")
            + "paths:\n  scripts: /b\n",
            ":16: paths.scripts: '/b' differs from cluster.master.paths.scripts ('/a')",
        ),
        (MINIMAL + "logging:\n  keep_runs: 0\n", ":14: logging.keep_runs: Input should be"),
        (
            MINIMAL + "dashboard:\n  host: 'a;rm -rf ~'\n",
            ":14: dashboard.host: 'a;rm -rf ~' is not an IP address (or localhost)",
        ),
        (
            MINIMAL + "telemetry:\n  interval_seconds: 0.01\n",
            ":14: telemetry.interval_seconds: must be 0 (off) or at least 0.1 seconds",
        ),
        (
            MINIMAL + "ssh:\n  known_hosts: '/a\"b'\n",
            ":14: ssh.known_hosts: '/a\"b': a path for ssh may not contain",
        ),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    if not expected:
        load_cluster_file(path)
        return
    assert expected in error_for(tmp_path, text)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    message = error_for(tmp_path, "\n".join(lines) + "\n")
    assert "more than 50000 nodes" in message


def test_not_utf8_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"cluster: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_cluster_file(path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_cluster_file(tmp_path)


def test_every_key_of_the_schema_changes_the_resolved_cluster(tmp_path: Path) -> None:
    """A key that is accepted must do something: setting any leaf of the schema to another valid
    value changes the resolved Cluster beyond the recorded document (which only repeats it)."""
    import yaml

    from ugro.config.schema import ClusterConfig

    base = yaml.safe_load(MINIMAL)
    base["workers"][0]["hardware"] = {}
    base["workers"][0]["paths"] = {}

    def resolved_without_document(data: dict) -> dict:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(data))
        return {**load_cluster_file(path).to_json(), "document": None}

    changes = {
        ("cluster", "location"): "Trondheim",
        ("cluster", "description"): "a lab",
        ("cluster", "master", "name"): "boss",
        ("cluster", "master", "port"): 2222,
        ("cluster", "master", "connection"): "ssh",
        ("cluster", "master", "accelerator"): "cpu",
        ("cluster", "master", "python"): "/opt/py/bin/python",
        ("cluster", "master", "nproc_per_node"): 2,
        ("cluster", "master", "micro_batch_size"): 6,
        ("cluster", "communication", "netcheck_max_age_hours"): 1,
        ("cluster", "master", "hardware", "gpu_model"): "RTX 5070 Ti",
        ("cluster", "master", "hardware", "gpu_count"): 1,
        ("cluster", "master", "hardware", "vram_gb"): 12,
        ("cluster", "master", "hardware", "cpu_cores"): 24,
        ("cluster", "master", "hardware", "ram_gb"): 64,
        ("cluster", "master", "paths", "home"): "/home/alice",
        ("cluster", "master", "paths", "project"): "/srv/ugro",
        ("cluster", "master", "paths", "scripts"): "/srv/ugro/scripts",
        ("cluster", "communication", "backend"): "static",
        ("cluster", "communication", "master_port"): 29600,
        ("cluster", "communication", "timeout_seconds"): 60,
        ("cluster", "communication", "max_restarts"): 2,
        ("cluster", "communication", "retries"): 3,
        ("cluster", "communication", "retry_backoff_seconds"): 1,
        ("workers", 0, "ssh_port"): 2200,
        ("workers", 0, "accelerator"): "cuda",
        ("workers", 0, "python"): "/opt/py/bin/python",
        ("workers", 0, "nproc_per_node"): 2,
        ("workers", 0, "micro_batch_size"): 3,
        ("workers", 0, "hardware", "gpu_model"): "RTX 4070",
        ("workers", 0, "hardware", "vram_gb"): 8,
        ("workers", 0, "hardware", "gpu_count"): 1,
        ("workers", 0, "hardware", "cpu_cores"): 16,
        ("workers", 0, "hardware", "ram_gb"): 32,
        ("workers", 0, "paths", "home"): "/data/ob",
        ("workers", 0, "paths", "project"): "/data/ob/UGRO",
        ("workers", 0, "paths", "scripts"): "/data/ob/scripts",
        ("paths", "project_root"): "/srv/lab",
        ("paths", "scripts"): "/srv/lab/scripts",
        ("paths", "config"): "/srv/lab/config",
        ("paths", "data"): "/srv/lab/data",
        ("paths", "logs"): "/srv/lab/logs",
        ("paths", "experiments"): "/srv/lab/exp",
        ("training", "default_model"): "tiny-llama",
        ("training", "default_dataset"): "builtin",
        ("training", "default_epochs"): 2,
        ("training", "default_learning_rate"): 0.1,
        ("training", "batch_size_per_gpu"): 2,
        ("training", "gradient_accumulation_steps"): 2,
        ("training", "max_seq_length"): 64,
        ("training", "lora", "rank"): 4,
        ("training", "lora", "alpha"): 8,
        ("training", "lora", "dropout"): 0.1,
        ("training", "lora", "target_modules"): ["q_proj"],
        ("environment", "manager"): "venv",
        ("environment", "conda_env"): "other",
        ("environment", "path"): "/opt/venv",
        ("environment", "python"): "/opt/python",
        ("environment", "requirements"): "/srv/req.txt",
        ("environment", "pixi_manifest_dir"): "/srv/pixi",
        ("environment", "pixi"): "/opt/pixi",
        ("environment", "base_python"): "/usr/bin/python3.11",
        ("environment", "wheelhouse"): "/srv/wheels",
        ("environment", "python_version"): "3.11",
        ("environment", "torch_version"): "2.5.1",
        ("environment", "cuda_version"): "12.4",
        ("logging", "level"): "INFO",
        ("logging", "format"): "%(message)s",
        ("logging", "file"): "/srv/lab/ugro.log",
        ("logging", "keep_days"): 3,
        ("logging", "keep_runs"): 5,
        ("ssh", "identity_file"): "/keys/id",
        ("ssh", "known_hosts"): "/keys/known_hosts",
        ("ssh", "connect_timeout"): 9,
        ("ssh", "python_interpreter"): "/usr/bin/python3.12",
        ("daemon", "probe_interval_seconds"): 30,
        ("daemon", "deep_probe_interval_seconds"): 600,
        ("daemon", "disk_min_free_gb"): 20,
        ("notify", "command"): ["/usr/local/bin/tell", "--me"],
        ("notify", "timeout_seconds"): 5,
        ("telemetry", "interval_seconds"): 0.5,
        ("dashboard", "host"): "10.0.0.1",
        ("dashboard", "port"): 9000,
        ("dashboard", "with_daemon"): False,
        ("scheduler",): "slurm",
        ("slurm", "cluster_name"): "lab",
        ("slurm", "partition"): "gpus",
        ("slurm", "job_user"): "trainer",
        ("slurm", "services"): "direct",
        ("slurm", "install"): False,
        ("slurm", "memory_margin_mb"): 2048,
        ("slurm", "controller_port"): 7817,
        ("slurm", "node_port"): 7818,
    }
    # Keys that only matter together with another one.
    needs = {
        ("environment", "conda_env"): {("environment", "manager"): "pixi"},
        ("environment", "pixi"): {("environment", "manager"): "pixi"},
        ("environment", "pixi_manifest_dir"): {("environment", "manager"): "pixi"},
        ("environment", "path"): {("environment", "manager"): "venv"},
        ("environment", "requirements"): {("environment", "manager"): "venv"},
        ("environment", "python"): {("environment", "manager"): "system"},
    }

    def leaves(model: type, prefix: tuple) -> list[tuple]:
        found = []
        for name, info in model.model_fields.items():
            annotation = info.annotation
            nested = annotation if isinstance(annotation, type) else None
            if nested is not None and hasattr(nested, "model_fields"):
                found += leaves(nested, (*prefix, name))
            elif name != "workers" or prefix:
                found.append((*prefix, name))
        return found

    def put(data: dict, path: tuple, value: object) -> None:
        for part in path[:-1]:
            data = data.setdefault(part, {}) if isinstance(part, str) else data[part]
        data[path[-1]] = value

    from ugro.config.schema import WorkerSection

    schema_keys = set(leaves(ClusterConfig, ()))
    schema_keys |= {("workers", 0, *key) for key in leaves(WorkerSection, ())}
    required = {
        ("cluster", "name"),
        ("cluster", "master", "hostname"),
        ("cluster", "master", "ip"),
        ("cluster", "master", "user"),
        ("workers", 0, "name"),
        ("workers", 0, "hostname"),
        ("workers", 0, "ip"),
        ("workers", 0, "user"),
        ("workers", 0, "rank"),
    }
    untested = schema_keys - set(changes) - required
    assert not untested, f"keys with no effect checked: {sorted(untested)}"
    for key, value in changes.items():
        before = json.loads(json.dumps(base))
        for other, setting in needs.get(key, {}).items():
            put(before, other, setting)
        after = json.loads(json.dumps(before))
        put(after, key, value)
        assert resolved_without_document(after) != resolved_without_document(before), key
