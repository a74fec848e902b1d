"""The programs ugro runs on the nodes from stdin, each as one self-contained script.

Three node-side programs are Python 3.8 standard library only, so that a node needs nothing of
ugro's: the health probe (roles/ugro_health/module_utils/ugro_probe.py, also the daemon's light
probe), the job control (roles/ugro_job/files/jobctl.py) and the network check's agent
(scripts/ugro_netcheck.py). The probe and the job control share one helper module, the node's
reader of a job's processes (ugro_jobprocs.py). Sent on stdin (`python3 -`), a program cannot
import a file beside it, so `script()` sends it with its helpers inlined: each helper becomes a
module in sys.modules before the program runs, and the program's own `import ugro_jobprocs`
finds it. Inside Ansible's modules the same files are module_utils, bundled by Ansible itself.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

from ugro.nodes import assets

_HELPERS = ("roles", "ugro_health", "module_utils")


@dataclass(frozen=True)
class NodeProgram:
    """A node-side program: its file (under the project) and the helper modules it imports."""

    path: tuple[str, ...]
    helpers: tuple[str, ...] = ()

    @property
    def file(self) -> Path:
        return assets.project_dir().joinpath(*self.path)

    def helper_files(self) -> list[Path]:
        return [assets.project_dir().joinpath(*_HELPERS, f"{name}.py") for name in self.helpers]


PROBE = NodeProgram(("roles", "ugro_health", "module_utils", "ugro_probe.py"), ("ugro_jobprocs",))
JOBCTL = NodeProgram(("roles", "ugro_job", "files", "jobctl.py"), ("ugro_jobprocs",))
NETCHECK = NodeProgram(("scripts", "ugro_netcheck.py"))
PROGRAMS = {"probe": PROBE, "jobctl": JOBCTL, "netcheck": NETCHECK}

_BOOTSTRAP = """\
# {name}, sent by ugro with the modules it imports inlined (ugro/nodes/scripts.py).
import sys as _ugro_sys, types as _ugro_types
def _ugro_module(name, source):
    module = _ugro_types.ModuleType(name)
    module.__file__ = name + ".py"
    _ugro_sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
"""


def script(program: NodeProgram) -> str:
    """The program as one script for `python -` (its helpers first, then itself as __main__)."""
    lines = [_BOOTSTRAP.format(name=program.file.name)]
    for helper in program.helper_files():
        lines.append(f"_ugro_module({helper.stem!r}, {helper.read_text(encoding='utf-8')!r})")
    body = program.file.read_text(encoding="utf-8")
    lines.append(f"exec(compile({body!r}, {program.file.name!r}, 'exec'))")
    return "\n".join(lines) + "\n"


@cache
def load(program: NodeProgram, name: str) -> ModuleType:
    """The program imported into this process as module `name` (stdlib only: the master runs
    the probe's functions for itself, ugro.health.fresh_reports), its helpers first."""
    for helper in program.helper_files():
        if helper.stem not in sys.modules:
            _import(helper.stem, helper)
    return _import(name, program.file)


def _import(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
