"""`ugro launch --dataset FILE`: a data file on the master travels with the job (ugro.launch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugro.commands.launch import launch_request
from ugro.core.errors import UsageError
from ugro.launch.attempt import attempt_vars
from ugro.launch.definition import JobScript, LaunchRequest, shipped_dataset


def test_a_file_on_the_master_travels_and_the_ranks_find_it_in_the_job(tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    data.write_text("{}\n")
    assert shipped_dataset(str(data)) == ("data/chats.jsonl", (str(data),))


@pytest.mark.parametrize("given", ["wikitext", "builtin-chat", "~/chats.jsonl", "missing.jsonl"])
def test_names_and_paths_of_the_nodes_pass_as_they_are(given: str) -> None:
    # A quoted '~/...' is each node's own home: it is not looked for on the master.
    assert shipped_dataset(given) == (given, ())


def test_a_path_ansible_would_template_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "{{ lookup('env', 'HOME') }}"
    odd.mkdir()
    (odd / "x.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="without braces"):
        shipped_dataset(str(odd / "x.jsonl"))


def test_the_request_keeps_the_file_for_every_attempt(cluster, tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    data.write_text("{}\n")
    request = launch_request(
        cluster, name="chat", seed_options={"--dataset": str(data)}, script=None, script_args=()
    )
    args = list(request.args)
    assert args[args.index("--dataset") + 1] == "data/chats.jsonl"
    again = LaunchRequest.from_json(request.to_json())
    variables = attempt_vars(
        again, "chat_20260101_000000", JobScript.choose("train_production.py"), again.args, 2, ["m"]
    )
    assert variables["ugro_launch_data_files"] == [str(data)]
