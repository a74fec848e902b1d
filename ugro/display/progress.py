"""Live progress on stderr: a playbook run's tasks and hosts, a followed job's steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ugro.display.console import err_console, number

if TYPE_CHECKING:
    from rich.progress import Progress

    from ugro.records.controller_files import ControllerState


def task_title(data: Mapping[str, Any]) -> str | None:
    """A task's name as a user reads it; None for Ansible's own bookkeeping."""
    name = str(data.get("task") or data.get("name") or "").strip()
    if not name or name.startswith("Validating arguments against arg spec"):
        return None
    if name == "Gathering Facts":
        return "Gather facts"
    # "Launch | Start the job" -> "Start the job": the command already says which part it is.
    return name.split(" | ", 1)[-1]


def _spinner() -> Progress:
    """A one-line live display on stderr, silent when stderr is not a terminal."""
    # Imported here: only the commands that follow a run draw progress (a table needs none).
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


class RunProgress:
    """The running task and how many hosts have finished it, on stderr: a spinner on a
    terminal, else one line as each task starts and for each host that fails it.

    Fed by ugro.runner's event stream.
    """

    def __init__(self, title: str, hosts: int) -> None:
        self.title = title
        self.hosts = hosts
        self.done: set[str] = set()
        self.task_name = "starting"
        self.progress = _spinner()
        self.plain = not err_console.is_terminal
        self.task_id = self.progress.add_task(self._text(), total=None)

    def _text(self) -> str:
        return f"{self.title}: {self.task_name} [{len(self.done)}/{self.hosts} hosts]"

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            title = task_title(data)
            if title is None:
                return
            self.task_name = title
            self.done = set()
            if self.plain:
                err_console.print(f"{self.title}: {title}", highlight=False, markup=False)
        elif kind.startswith("runner_on_") and kind != "runner_on_start" and data.get("host"):
            self.done.add(data["host"])
            failed = kind in ("runner_on_failed", "runner_on_unreachable")
            if self.plain and failed and not data.get("ignore_errors"):
                what = "unreachable" if kind == "runner_on_unreachable" else "failed"
                err_console.print(
                    f"{self.title}: {data['host']} {what}: {self.task_name}",
                    highlight=False,
                    markup=False,
                )
        self.progress.update(self.task_id, description=self._text())


class TrainingProgress:
    """Steps and the latest loss of a followed job, on stderr: one line redrawn on a terminal,
    else a line per metrics record."""

    def __init__(self, job_id: str, *, verbose: bool = False) -> None:
        self.job_id = job_id
        self.verbose = verbose
        self.progress = _spinner()
        self.plain = not err_console.is_terminal
        self.task_id = self.progress.add_task(f"{job_id}: starting", total=None)
        self.line = f"{job_id}: starting"
        self.note = ""
        if self.plain:
            err_console.print(f"{job_id}: started; following it", highlight=False, markup=False)

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def notice(self, lines: Iterable[str]) -> None:
        """Lines printed once, above the step line (the batches' split, say)."""
        for line in lines:
            err_console.print(f"{line}", highlight=False, markup=False)

    def status(self, state: ControllerState) -> None:
        """What the job's controller says (a stall, a retry coming): beside the step line, and
        as a line of its own off a terminal when it changes."""
        note, phase = state.message, state.phase
        if phase and phase not in ("watching", "done"):
            note = f"{phase}: {note}" if note else phase
        if note == self.note:
            return
        self.note = note
        if self.plain and note:
            err_console.print(f"{self.job_id}: {note}", highlight=False, markup=False)
        self.progress.update(self.task_id, description=self.line + (f" - {note}" if note else ""))

    def __call__(self, entry: Mapping[str, Any]) -> None:
        if self.verbose:
            err_console.print(entry)
        elif entry.get("kind") == "train":
            text = f"{self.job_id}: step {entry.get('step')} loss {entry.get('loss', 0):.4f}"
            if entry.get("tokens_per_s"):
                text += f" ({entry['tokens_per_s']:.0f} tokens/s)"
            if self.plain:
                err_console.print(text, highlight=False, markup=False)
            self.line = text
            self.progress.update(
                self.task_id, description=text + (f" - {self.note}" if self.note else "")
            )
        elif entry.get("kind") == "eval" and self.plain:
            loss = number(entry.get("eval_loss"), "eval_loss")
            text = f"{self.job_id}: step {entry.get('step')} eval loss {loss}"
            err_console.print(text, highlight=False, markup=False)
