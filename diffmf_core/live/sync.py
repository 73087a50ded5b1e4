"""Thermal/RGB pairing with the ApproximateTime policy of ROS message_filters (pure Python, no ROS).

Contract (``PairSynchronizer``):
- Policy: each input keeps a time-sorted queue. With both queues non-empty, the earliest head
  is the candidate start and the latest head the pivot (candidate end); the set with the
  smallest time spread that contains the pivot's message is searched for, and it is emitted as
  soon as no later message can give a smaller spread (proved from the queues, or with the
  optional per-input ``inter_message_lower_bound`` when a queue is empty). After an emission every
  message at or before the matched ones is removed. A queue holding more than ``queue_size``
  messages drops its oldest one. Sets spreading more than ``slop`` seconds are never emitted.
- Thermal stamps are matched as ``stamp - thermal_offset`` (a constant thermal delay); emitted
  pairs keep the original stamps, and ``MatchedPair.stamp_ns`` (the output stamp) is the RGB stamp.
- Robustness on live/bag input: a second message with a stamp already queued on the same input
  is ignored (``duplicates``); an out-of-order message is inserted in time order, or dropped if
  it is not newer than what that input already consumed (``out_of_order``); a stamp going back by
  more than ``max_backjump`` seconds (bag loop, clock reset) clears both queues (``resets``) and
  pairing continues in the new epoch; the other input's remaining old-epoch messages are dropped.
- Counters in ``stats``: matched, dropped_thermal, dropped_rgb (messages that never made it into
  a pair, whatever the reason), duplicates, out_of_order, resets. Emitted pairs per input have
  strictly increasing stamps between resets. Deterministic; memory bounded by ``queue_size``.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, NamedTuple

THERMAL, RGB = 0, 1
_NS = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time-like stamp (rclpy or rosbags: ``sec``, ``nanosec``)."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a stamp in nanoseconds, as builtin_interfaces/Time wants them."""
    return divmod(int(ns), _NS)


class MatchedPair(NamedTuple):
    thermal_stamp_ns: int
    rgb_stamp_ns: int
    thermal: Any
    rgb: Any
    stamp_ns: int  # output stamp of the pair: the RGB stamp


@dataclass
class SyncStats:
    matched: int = 0
    dropped_thermal: int = 0
    dropped_rgb: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(order=True)
class _Msg:
    t: int  # matching time (ns)
    stamp: int = field(compare=False)
    item: Any = field(compare=False)


class PairSynchronizer:
    """ApproximateTime pairing of a thermal and an RGB stream (see module contract)."""

    def __init__(self, queue_size: int = 10, slop: float = 0.05, thermal_offset: float = 0.0,
                 max_backjump: float = 1.0, inter_message_lower_bound: tuple[float, float] = (0.0, 0.0)):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop < 0 or max_backjump <= 0:
            raise ValueError(f"need slop >= 0 and max_backjump > 0, got {slop}, {max_backjump}")
        self.queue_size = int(queue_size)
        self.slop_ns = round(slop * _NS)
        self.offset_ns = round(thermal_offset * _NS)
        self.backjump_ns = round(max_backjump * _NS)
        self.lower_bound_ns = [round(b * _NS) for b in inter_message_lower_bound]
        self.stats = SyncStats()
        self._clear()

    # ----------------------------------------------------------------- public API
    def add_thermal(self, stamp_ns: int, item: Any) -> list[MatchedPair]:
        """Queue a thermal message; returns the pairs this completes (often none, rarely several)."""
        return self._add(THERMAL, int(stamp_ns) - self.offset_ns, int(stamp_ns), item)

    def add_rgb(self, stamp_ns: int, item: Any) -> list[MatchedPair]:
        """Queue an RGB message; returns the pairs this completes."""
        return self._add(RGB, int(stamp_ns), int(stamp_ns), item)

    def reset(self) -> None:
        """Drop every queued message (counted as dropped) and the search state; counts a reset."""
        self._count_dropped_all()
        self._clear()
        self.stats.resets += 1

    def queue_lengths(self) -> tuple[int, int]:
        """Messages held per input (thermal, rgb); each is at most ``queue_size`` between calls."""
        return tuple(len(self._q[i]) + len(self._past[i]) for i in (THERMAL, RGB))

    # ----------------------------------------------------------------- state
    def _clear(self) -> None:
        self._q: list[list[_Msg]] = [[], []]      # waiting messages, time-sorted
        self._past: list[list[_Msg]] = [[], []]   # messages set aside during a candidate search
        self._candidate: list[_Msg] | None = None
        self._pivot: int | None = None
        self._pivot_t = self._cand_start = self._cand_end = 0
        self._has_dropped = [False, False]
        self._floor: list[int | None] = [None, None]   # newest matching time consumed per input
        self._latest: list[int | None] = [None, None]  # newest matching time seen per input
        self._stale_epoch = [False, False]  # after a reset: input still delivering pre-reset stamps

    def _count_dropped(self, i: int, n: int = 1) -> None:
        if i == THERMAL:
            self.stats.dropped_thermal += n
        else:
            self.stats.dropped_rgb += n

    def _count_dropped_all(self) -> None:
        for i in (THERMAL, RGB):
            self._count_dropped(i, len(self._q[i]) + len(self._past[i]))

    def _consume(self, i: int, msg: _Msg) -> None:
        self._floor[i] = msg.t if self._floor[i] is None else max(self._floor[i], msg.t)

    # ----------------------------------------------------------------- arrival
    def _add(self, i: int, t: int, stamp: int, item: Any) -> list[MatchedPair]:
        other = 1 - i
        latest = self._latest[i]
        if latest is not None and t < latest - self.backjump_ns:
            self.reset()
            self._stale_epoch[other] = True
            latest = None
        if self._stale_epoch[i]:
            ref = self._latest[other]
            if ref is not None and t > ref + self.backjump_ns:
                self._count_dropped(i)  # this input is still delivering pre-reset stamps
                return []
            self._stale_epoch[i] = False
        self._latest[i] = t if latest is None else max(latest, t)
        queued = self._past[i] + self._q[i]  # time-sorted: past holds the older ones
        floor = self._floor[i]
        if floor == t or any(m.t == t for m in queued):
            self.stats.duplicates += 1
            return []
        if floor is not None and t < floor:
            self.stats.out_of_order += 1
            self._count_dropped(i)
            return []
        out: list[MatchedPair] = []
        msg = _Msg(t, stamp, item)
        if queued and t < queued[-1].t:
            self.stats.out_of_order += 1
            self._abandon_candidate()
            bisect.insort(self._q[i], msg)
        else:
            self._q[i].append(msg)
        self._process(out)
        if len(self._q[i]) + len(self._past[i]) > self.queue_size:
            self._recover_all()
            self._consume(i, self._q[i].pop(0))
            self._count_dropped(i)
            self._has_dropped[i] = True
            if self._pivot is not None:
                self._candidate, self._pivot = None, None
                self._process(out)
        return out

    # ----------------------------------------------------------------- ApproximateTime core
    def _recover_all(self) -> None:
        for i in (THERMAL, RGB):
            if self._past[i]:
                self._q[i][:0] = self._past[i]
                self._past[i] = []

    def _abandon_candidate(self) -> None:
        self._recover_all()
        self._candidate, self._pivot = None, None

    def _move_to_past(self, i: int) -> None:
        self._past[i].append(self._q[i].pop(0))

    def _delete_front(self, i: int) -> None:
        self._consume(i, self._q[i].pop(0))
        self._count_dropped(i)

    def _make_candidate(self, start_t: int, end_t: int) -> None:
        self._candidate = [self._q[THERMAL][0], self._q[RGB][0]]
        for i in (THERMAL, RGB):
            for m in self._past[i]:
                self._consume(i, m)
            self._count_dropped(i, len(self._past[i]))
            self._past[i] = []
        self._cand_start, self._cand_end = start_t, end_t

    @staticmethod
    def _bounds(times: list[int]) -> tuple[int, int, int, int]:
        """(start index, start time, end index, end time); ties: start = first, end = last."""
        start_i = 0 if times[0] <= times[1] else 1
        end_i = 1 if times[1] >= times[0] else 0
        return start_i, times[start_i], end_i, times[end_i]

    def _publish(self, out: list[MatchedPair]) -> None:
        thermal, rgb = self._candidate
        out.append(MatchedPair(thermal.stamp, rgb.stamp, thermal.item, rgb.item, rgb.stamp))
        self.stats.matched += 1
        self._candidate, self._pivot = None, None
        self._recover_all()
        for i, msg in ((THERMAL, thermal), (RGB, rgb)):
            head = self._q[i].pop(0)
            assert head is msg, "candidate must be the oldest remaining message"
            self._consume(i, head)

    def _virtual_time(self, i: int) -> int:
        if self._q[i]:
            return self._q[i][0].t
        return max(self._past[i][-1].t + self.lower_bound_ns[i], self._pivot_t)

    def _process(self, out: list[MatchedPair]) -> None:
        while self._q[THERMAL] and self._q[RGB]:
            start_i, start_t, end_i, end_t = self._bounds([self._q[0][0].t, self._q[1][0].t])
            self._has_dropped[1 - end_i] = False
            if self._pivot is None:
                if end_t - start_t > self.slop_ns or self._has_dropped[end_i]:
                    self._delete_front(start_i)
                    continue
                self._make_candidate(start_t, end_t)
                self._pivot, self._pivot_t = end_i, end_t
            elif end_t - start_t < self._cand_end - self._cand_start:
                self._make_candidate(start_t, end_t)
            self._move_to_past(start_i)
            if start_i == self._pivot or end_t - self._cand_end >= self._pivot_t - self._cand_start:
                self._publish(out)
            elif not (self._q[THERMAL] and self._q[RGB]):
                self._virtual_search(out)

    def _virtual_search(self, out: list[MatchedPair]) -> None:
        """With a queue empty, try to prove the candidate optimal from lower bounds on future stamps."""
        moves = [0, 0]
        while True:
            start_i, start_t, _, end_t = self._bounds([self._virtual_time(0), self._virtual_time(1)])
            if end_t - self._cand_end >= self._pivot_t - self._cand_start:
                self._publish(out)
                return
            if end_t - self._cand_end < start_t - self._cand_start:
                for i in (THERMAL, RGB):  # a future set could be better: undo and wait
                    if moves[i]:
                        self._q[i][:0] = self._past[i][-moves[i]:]
                        del self._past[i][-moves[i]:]
                return
            self._move_to_past(start_i)
            moves[start_i] += 1
