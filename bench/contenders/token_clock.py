"""The one measurement every throughput contender takes the same way (bench/throughput.py):
at each log event, the step, the seconds since training began and the non-padding input tokens
all ranks have trained on. Written by rank 0 as JSON when training ends.

Nothing of UGRO's: the contenders that use it are what a user would write without UGRO."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class TokenClock(TrainerCallback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.began = time.monotonic()
        self.marks: list[list[float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            seconds = time.monotonic() - self.began
            self.marks.append([state.global_step, round(seconds, 4), state.num_input_tokens_seen])

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.out.write_text(json.dumps({"world_size": args.world_size, "marks": self.marks}))
