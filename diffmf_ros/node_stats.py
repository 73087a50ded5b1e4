"""The fusion node's worker hand-off and its measurements: the one-slot latest-job mailbox between
the subscriptions and the worker thread, and the thread-safe counters, rates and percentiles that
``/diagnostics`` reports (keys: docs/node.md). No rclpy: unit-testable on its own."""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class LatestMailbox:
    """One-slot holder: put() replaces a waiting item (counted in `dropped`); get() blocks."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def get(self):
        """The newest item, or None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items waiting (0 or 1)."""
        return int(self._item is not None)


class Stats:
    """Thread-safe counters, event rates over a sliding window, latency and stamp-delay percentiles."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._window_ns = int(window_s * 1e9)
        self._events: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._latency = collections.deque(maxlen=300)
        self._inference = collections.deque(maxlen=300)
        self._delay: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=100))
        self.counters: collections.Counter = collections.Counter()
        self._start_ns = time.monotonic_ns()
        self.last_ns: dict[str, int] = {}

    def tick(self, name: str) -> None:
        now = time.monotonic_ns()
        with self._lock:
            self._events[name].append(now)
            self.last_ns[name] = now

    def count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def record(self, latency_ms: float, inference_ms: float) -> None:
        with self._lock:
            self._latency.append(latency_ms)
            self._inference.append(inference_ms)

    def record_delay(self, source: str, delay_ms: float) -> None:
        with self._lock:
            self._delay[source].append(delay_ms)

    def rate(self, name: str) -> float:
        now = time.monotonic_ns()
        with self._lock:
            q = self._events[name]
            while q and q[0] < now - self._window_ns:
                q.popleft()
            span = min(self._window_ns, now - self._start_ns)
            return len(q) * 1e9 / span if span > 0 else 0.0

    def percentiles(self) -> dict[str, float]:
        with self._lock:
            lat, inf = list(self._latency), list(self._inference)
            delays = {s: list(d) for s, d in self._delay.items()}
        out = {}
        if lat:
            for q, v in zip((50, 90, 99), np.percentile(lat, (50, 90, 99))):
                out[f"latency_p{q}_ms"] = float(v)
            out["inference_p50_ms"] = float(np.median(inf))
        for source, values in sorted(delays.items()):
            if values:
                out[f"{source}_stamp_delay_ms"] = float(np.median(values))
        return out
