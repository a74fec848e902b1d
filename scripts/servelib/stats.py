"""What a server has done: requests answered and refused, latency percentiles, tokens/s."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

_WINDOW = 1000  # the latest requests the percentiles describe


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.failed = 0
        self.refused = 0
        self._latencies: deque[float] = deque(maxlen=_WINDOW)
        self._first_tokens: deque[float] = deque(maxlen=_WINDOW)
        self._lock = threading.Lock()

    def answered(self, seconds: float, first_token: float | None) -> None:
        with self._lock:
            self.requests += 1
            self._latencies.append(seconds)
            if first_token is not None:
                self._first_tokens.append(first_token)

    def refuse(self) -> None:
        with self._lock:
            self.refused += 1

    def fail(self) -> None:
        with self._lock:
            self.failed += 1

    def view(self, *, generated: int, busy: float, waiting: int) -> dict[str, Any]:
        with self._lock:
            latencies = sorted(self._latencies)
            firsts = sorted(self._first_tokens)
            return {
                "started_at": self.started,
                "requests": self.requests,
                "failed": self.failed,
                "refused": self.refused,
                "waiting": waiting,
                "latency_p50_ms": _percentile(latencies, 50),
                "latency_p99_ms": _percentile(latencies, 99),
                "first_token_p50_ms": _percentile(firsts, 50),
                "generated_tokens": generated,
                "tokens_per_s": round(generated / busy, 1) if busy > 0 else None,
            }


def _percentile(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values) + 0.5) - 1))
    return round(values[index] * 1000, 1)
