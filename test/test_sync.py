"""Thermal/RGB pairing with ApproximateTime semantics (diffmf_core.live.sync)."""
from types import SimpleNamespace

import pytest

from diffmf_core.live.sync import MatchedPair, PairSynchronizer, split_ns, stamp_to_ns

MS = 1_000_000


def feed(sync: PairSynchronizer, events):
    """events: (stamp_ms, 't'|'r'[, item]) in arrival order -> list of emitted pairs."""
    out = []
    for ev in events:
        stamp, who = ev[0], ev[1]
        item = ev[2] if len(ev) > 2 else f"{who}{stamp}"
        add = sync.add_thermal if who == "t" else sync.add_rgb
        out += add(round(stamp * MS), item)
        assert max(sync.queue_lengths()) <= sync.queue_size
    return out


def stamps(pairs):
    return [(p.thermal_stamp_ns / MS, p.rgb_stamp_ns / MS) for p in pairs]


def test_exact_pairs_are_matched_one_to_one():
    sync = PairSynchronizer(queue_size=5, slop=0.01)
    events = []
    for k in range(10):
        events += [(k * 100, "t"), (k * 100, "r")]
    pairs = feed(sync, events)
    # a zero-spread set cannot be beaten, so each pair is emitted as soon as it is complete
    assert stamps(pairs) == [(k * 100, k * 100) for k in range(10)]
    assert pairs[0] == MatchedPair(0, 0, "t0", "r0", 0)
    assert sync.stats.matched == 10 and sync.queue_lengths() == (0, 0)


def test_output_stamp_is_the_rgb_stamp():
    sync = PairSynchronizer(slop=0.02)
    pairs = feed(sync, [(0, "t"), (5, "r"), (100, "t"), (104, "r"), (200, "t")])
    assert [(p.stamp_ns, p.rgb_stamp_ns) for p in pairs] == [(5 * MS, 5 * MS), (104 * MS, 104 * MS)]


def test_jitter_within_slop_pairs_nearest_neighbours():
    sync = PairSynchronizer(queue_size=10, slop=0.015)
    jitter = [3, -4, 7, 0, -6, 5, -2, 6, -7, 1]
    events = []
    for k, j in enumerate(jitter):
        events += [(k * 50 + j, "t"), (k * 50, "r")]
    pairs = feed(sync, events + [(500, "t"), (500, "r")])
    assert stamps(pairs) == [(k * 50 + j, k * 50) for k, j in enumerate(jitter)] + [(500, 500)]


def test_pairs_outside_slop_are_never_emitted():
    sync = PairSynchronizer(slop=0.01)
    pairs = feed(sync, [(0, "t"), (30, "r"), (60, "t"), (90, "r"), (120, "t"), (125, "r"), (200, "t"), (200, "r")])
    assert stamps(pairs) == [(120, 125), (200, 200)]
    assert sync.stats.dropped_thermal >= 2 and sync.stats.dropped_rgb >= 2


def test_thermal_offset_shifts_matching_but_keeps_stamps():
    sync = PairSynchronizer(slop=0.005, thermal_offset=0.03)  # thermal stamped 30 ms late
    events = []
    for k in range(6):
        events += [(k * 100, "r"), (k * 100 + 30, "t")]
    pairs = feed(sync, events + [(600, "r"), (630, "t")])
    assert stamps(pairs) == [(k * 100 + 30, k * 100) for k in range(7)]


def test_faster_stream_pairs_each_slow_frame_with_its_closest():
    sync = PairSynchronizer(queue_size=10, slop=0.02)
    events = [(k * 10, "t") for k in range(61)] + [(k * 33 + 1, "r") for k in range(19)]
    events.sort()
    pairs = feed(sync, events)
    assert [r for _, r in stamps(pairs)] == [k * 33 + 1 for k in range(19)]
    for t, r in stamps(pairs):
        assert abs(t - r) <= 5  # the nearest 10 ms thermal frame
    assert sync.stats.dropped_rgb == 0 and sync.stats.dropped_thermal > 30


def test_candidate_waits_for_a_better_partner():
    sync = PairSynchronizer(slop=0.05)
    # thermal 0 could pair with rgb 30, but rgb 2 (late arrival, still in order) is closer
    assert feed(sync, [(0, "t"), (30, "t")]) == []
    pairs = feed(sync, [(2, "r"), (31, "r"), (60, "t"), (61, "r"), (100, "t"), (100, "r")])
    assert stamps(pairs)[:2] == [(0, 2), (30, 31)]


def test_duplicates_are_ignored_and_counted():
    sync = PairSynchronizer(slop=0.01)
    pairs = feed(sync, [(0, "t", "first"), (0, "t", "second"), (0, "r"), (0, "r", "dup"), (100, "t"), (100, "r"),
                        (100, "r", "dup2"), (200, "t")])
    assert [(p.thermal, p.rgb) for p in pairs] == [("first", "r0"), ("t100", "r100")]
    assert sync.stats.duplicates == 3


def test_out_of_order_message_is_inserted_sorted():
    sync = PairSynchronizer(slop=0.01)
    pairs = feed(sync, [(0, "t"), (100, "t"), (50, "t"), (52, "r"), (98, "r"), (200, "t"), (200, "r")])
    assert stamps(pairs) == [(50, 52), (100, 98), (200, 200)]
    assert sync.stats.out_of_order == 1


def test_out_of_order_older_than_consumed_is_dropped():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(100, "t"), (100, "r"), (200, "t"), (200, "r")])
    dropped = sync.stats.dropped_thermal
    assert feed(sync, [(150, "t"), (50, "t")]) == []
    assert sync.stats.out_of_order == 2 and sync.stats.dropped_thermal == dropped + 2


def test_queue_is_bounded_when_one_input_is_silent():
    sync = PairSynchronizer(queue_size=4, slop=0.01)
    feed(sync, [(k * 10, "t") for k in range(50)])
    assert sync.queue_lengths() == (4, 0)
    assert sync.stats.dropped_thermal == 46
    pairs = feed(sync, [(490, "r"), (500, "t"), (500, "r"), (600, "t")])
    assert stamps(pairs) == [(490, 490), (500, 500)]


def test_bag_loop_resets_and_keeps_pairing():
    sync = PairSynchronizer(queue_size=5, slop=0.01)
    first = []
    for k in range(30):
        first += [(1000 + k * 100, "t"), (1000 + k * 100, "r")]
    pairs = feed(sync, first)
    assert len(pairs) == 30
    # the thermal stream loops first; the RGB stream still sends two old frames, then loops too
    loop = [(1000, "t"), (4000, "r"), (1100, "t"), (4100, "r"), (1000, "r"), (1100, "r"), (1200, "t"),
            (1200, "r"), (1300, "t"), (1300, "r")]
    pairs = feed(sync, loop)
    assert sync.stats.resets == 1
    assert stamps(pairs) == [(1000, 1000), (1100, 1100), (1200, 1200), (1300, 1300)]
    assert sync.stats.dropped_rgb == 2  # the old-epoch RGB frames 4000 and 4100


def test_single_backwards_glitch_does_not_stall():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(10_000 + k * 100, w) for k in range(10) for w in "tr"])
    pairs = feed(sync, [(0, "t")] + [(11_000 + k * 100, w) for k in range(10) for w in "tr"])
    assert sync.stats.resets == 1
    assert len(pairs) >= 8


def test_explicit_reset_clears_queues():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(0, "t"), (5, "t"), (100, "r")])
    sync.reset()
    assert sync.queue_lengths() == (0, 0) and sync.stats.resets == 1
    assert stamps(feed(sync, [(0, "t"), (0, "r"), (100, "t"), (100, "r"), (200, "t")])) == [(0, 0), (100, 100)]


def test_inter_message_lower_bound_emits_without_waiting():
    # with a known 100 ms frame period, the pair is provably optimal as soon as both are here
    sync = PairSynchronizer(slop=0.01, inter_message_lower_bound=(0.09, 0.09))
    assert stamps(feed(sync, [(0, "t"), (2, "r")])) == [(0, 2)]
    plain = PairSynchronizer(slop=0.01)
    assert feed(plain, [(0, "t"), (2, "r")]) == []


@pytest.mark.parametrize("kwargs", [dict(queue_size=0), dict(slop=-1), dict(max_backjump=0)])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        PairSynchronizer(**kwargs)


# --- the slop boundary: a pair spreading exactly ``slop`` is accepted, anything more is not -----------------

SLOP_MS = 10


@pytest.mark.parametrize("gap_ms, paired", [
    (0, True), (SLOP_MS - 1e-6, True), (SLOP_MS, True),          # up to and including slop (1 ns resolution)
    (SLOP_MS + 1e-6, False), (1.5 * SLOP_MS, False), (2 * SLOP_MS, False),
])
@pytest.mark.parametrize("later", ["t", "r"])
def test_slop_boundary_is_inclusive(gap_ms, paired, later):
    """ApproximateTime emits a set whose stamps spread at most ``slop`` (message_filters: ``>``
    rejects); the next frames, 100 ms later, close the search either way."""
    sync = PairSynchronizer(queue_size=5, slop=SLOP_MS / 1000)
    first = [(0, "r" if later == "t" else "t"), (gap_ms, later)]
    pairs = feed(sync, first + [(100, "t"), (100, "r"), (200, "t"), (200, "r")])
    t0, r0 = (0, gap_ms) if later == "r" else (gap_ms, 0)
    expected = ([(t0, r0)] if paired else []) + [(100, 100), (200, 200)]  # zero spread: emitted at once
    assert [(round(t, 6), round(r, 6)) for t, r in stamps(pairs)] == expected
    assert sync.stats.matched == len(expected)
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb) == ((0, 0) if paired else (1, 1))


@pytest.mark.parametrize("gap_ms, paired", [(SLOP_MS, True), (SLOP_MS + 1e-6, False), (1.5 * SLOP_MS, False)])
def test_slop_boundary_after_thermal_offset(gap_ms, paired):
    """The slop applies to the offset-corrected thermal stamp (thermal stamped 30 ms late)."""
    sync = PairSynchronizer(queue_size=5, slop=SLOP_MS / 1000, thermal_offset=0.03)
    pairs = feed(sync, [(0, "r"), (30 + gap_ms, "t"), (100, "r"), (130, "t"), (200, "r"), (230, "t")])
    expected = ([(30 + gap_ms, 0)] if paired else []) + [(130, 100), (230, 200)]
    assert [(round(t, 6), round(r, 6)) for t, r in stamps(pairs)] == expected


def test_slop_zero_pairs_only_equal_stamps():
    sync = PairSynchronizer(queue_size=5, slop=0.0)
    pairs = feed(sync, [(0, "t"), (1e-6, "r"), (100, "t"), (100, "r"), (200, "t"), (200, "r")])
    assert stamps(pairs) == [(100, 100), (200, 200)]


# --- found by the mutation run (docs/development.md): counters accumulate, the default back-jump limit ------


def test_counters_accumulate_and_default_backjump_is_one_second():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(10_000, "t"), (10_000, "r"), (10_200, "t"), (10_100, "t"), (10_150, "t")])
    assert sync.stats.out_of_order == 2  # both inserted in time order (newer than anything consumed)
    feed(sync, [(9_400, "t")])             # 0.8 s back: within the default 1 s, out of order only
    assert sync.stats.resets == 0
    feed(sync, [(8_000, "t")])             # 2.2 s back from the newest: a new epoch
    assert sync.stats.resets == 1
    feed(sync, [(6_500, "t")])             # 1.5 s back again
    assert sync.stats.resets == 2


@pytest.mark.parametrize("kwargs, message", [(dict(queue_size=0), "queue_size"), (dict(slop=-1), "slop"),
                                             (dict(max_backjump=0), "max_backjump")])
def test_bad_parameters_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PairSynchronizer(**kwargs)


# --- found by the scoped mutation run of issue 16 (docs/mutation.md "sync"): each test below fails on a -----
# --- surviving mutant of that run and pins a hand-worked case of the policy ------------------------------------

S = 1_000_000_000  # one second in ns


def test_stamp_conversions_and_stats_dict():
    stamp = SimpleNamespace(sec=3, nanosec=250_000_000)
    assert stamp_to_ns(stamp) == 3_250_000_000
    assert split_ns(3_250_000_000) == (3, 250_000_000)
    assert split_ns(stamp_to_ns(SimpleNamespace(sec=7, nanosec=999_999_999))) == (7, 999_999_999)
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(0, "t"), (0, "r"), (5, "t")])
    assert sync.stats.as_dict() == dict(matched=1, dropped_thermal=0, dropped_rgb=0, duplicates=0,
                                        out_of_order=0, resets=0)


def test_default_queue_size_is_ten_and_default_slop_fifty_ms():
    sync = PairSynchronizer()
    feed(sync, [(k * 10, "t") for k in range(11)])
    assert sync.queue_lengths() == (10, 0) and sync.stats.dropped_thermal == 1
    for gap, paired in [(50, True), (51, False)]:
        pairs = feed(PairSynchronizer(), [(0, "t"), (gap, "r"), (200, "t"), (200, "r")])
        assert stamps(pairs) == ([(0, gap)] if paired else []) + [(200, 200)]


def test_reset_counts_the_queued_messages_per_input():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(0, "t"), (5, "t")])
    sync.reset()
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb) == (2, 0)
    feed(sync, [(0, "r")])
    sync.reset()
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb, sync.stats.resets) == (2, 1, 2)


def test_backjump_of_exactly_max_backjump_is_only_out_of_order():
    sync = PairSynchronizer(slop=0.01, max_backjump=1.0)
    sync.add_thermal(2 * S, "a")
    sync.add_thermal(1 * S, "b")          # exactly 1 s back: inserted in order, no new epoch
    assert (sync.stats.resets, sync.stats.out_of_order, sync.queue_lengths()) == (0, 1, (2, 0))
    sync.add_thermal(1 * S - 1, "c")      # 1 s + 1 ns back from the newest (2 s): a new epoch
    assert (sync.stats.resets, sync.queue_lengths()) == (1, (1, 0))


def test_backjump_is_measured_from_the_newest_stamp_not_the_last():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(10_000, "r"), (9_900, "r")])  # out of order, inserted
    assert sync.stats.resets == 0
    feed(sync, [(8_950, "r")])  # 0.95 s before the last one, 1.05 s before the newest (10 000)
    assert sync.stats.resets == 1 and sync.queue_lengths() == (0, 1)


def test_fresh_synchronizer_accepts_clocks_further_apart_than_max_backjump():
    # nothing is stale before the first reset, whichever input comes first
    for first, second in [("r", "t"), ("t", "r")]:
        sync = PairSynchronizer(slop=0.01)
        pairs = feed(sync, [(0, first), (5_000, second), (5_000, first)])
        assert stamps(pairs) == [(5_000, 5_000)]
        assert sync.stats.dropped_thermal + sync.stats.dropped_rgb == 1  # the lone frame at 0


def test_stale_epoch_boundary_is_max_backjump_ahead_of_the_looping_input():
    # thermal loops (10 s -> 5 s); RGB frames more than 1 s ahead of the new thermal epoch are stale
    for rgb_ms, stale in [(6_000, False), (6_000 + 1e-6, True)]:
        sync = PairSynchronizer(slop=0.01)
        feed(sync, [(10_000, "t"), (10_000, "r"), (5_000, "t"), (rgb_ms, "r")])
        assert sync.stats.resets == 1
        if stale:  # dropped on arrival, the thermal frame stays queued
            assert sync.queue_lengths() == (1, 0) and sync.stats.dropped_rgb == 1
        else:      # accepted into the new epoch; the thermal frame 1 s older cannot pair and goes
            assert sync.queue_lengths() == (0, 1) and sync.stats.dropped_rgb == 0
            assert sync.stats.dropped_thermal == 1


def test_bag_loop_of_rgb_first_drops_stale_thermal_as_thermal():
    sync = PairSynchronizer(slop=0.01)
    feed(sync, [(10_000, "r"), (10_000, "t"), (5_000, "r"), (10_100, "t")])
    assert sync.stats.resets == 1
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb) == (1, 0)
    assert sync.queue_lengths() == (0, 1)


def test_stale_state_ends_with_the_first_frame_of_the_new_epoch():
    # after the RGB frame at 5 s joins the new epoch, a later RGB frame more than max_backjump ahead of
    # the (stalled) thermal input is a normal frame again
    sync = PairSynchronizer(slop=0.01)
    pairs = feed(sync, [(10_000, "t"), (10_000, "r"), (5_000, "t"), (5_000, "r"), (6_500, "r"), (6_500, "t")])
    assert stamps(pairs) == [(10_000, 10_000), (5_000, 5_000), (6_500, 6_500)]
    assert sync.stats.dropped_rgb == 0


def test_queue_bound_drops_the_oldest_message():
    sync = PairSynchronizer(queue_size=2, slop=0.005)
    feed(sync, [(0, "t"), (10, "t"), (20, "t")])  # 0 is dropped, 10 and 20 stay
    assert sync.stats.dropped_thermal == 1
    assert stamps(sync.add_rgb(10 * MS, "r10")) == [(10, 10)]


def test_start_message_is_dropped_when_the_end_input_lost_a_message():
    # message_filters' has_dropped_messages: RGB 0 fell off the bounded queue, so thermal 5 (whose best
    # partner it may have been) is dropped instead of being paired with RGB 30
    sync = PairSynchronizer(queue_size=2, slop=0.05)
    pairs = feed(sync, [(0, "r"), (30, "r"), (60, "r"), (5, "t"), (100, "t"), (100, "r")])
    assert stamps(pairs) == [(100, 100)]
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb) == (1, 3)


def test_equal_stamps_make_rgb_the_end_of_the_set():
    # ties: start = thermal (first), end = RGB (last), as message_filters; so only a dropped RGB
    # message blocks a tie, and then the thermal start is the message dropped
    sync = PairSynchronizer(queue_size=2, slop=0.05)
    assert feed(sync, [(0, "t"), (30, "t"), (60, "t")]) == []  # thermal 0 dropped by the bound
    assert stamps(sync.add_rgb(30 * MS, "r30")) == [(30, 30)]
    sync = PairSynchronizer(queue_size=2, slop=0.05)
    assert feed(sync, [(0, "r"), (30, "r"), (60, "r"), (30, "t")]) == []
    assert sync.queue_lengths() == (0, 2)
    assert (sync.stats.dropped_thermal, sync.stats.dropped_rgb) == (1, 1)


def test_a_pair_is_emitted_by_the_message_that_completes_it():
    sync = PairSynchronizer(slop=0.01)
    assert feed(sync, [(0, "t"), (100, "t")]) == []
    # thermal 0 is too far from RGB 100 and is dropped; the search goes on to thermal 100 at once
    assert stamps(sync.add_rgb(100 * MS, "r100")) == [(100, 100)]


def test_equal_spread_keeps_the_earlier_candidate():
    sync = PairSynchronizer(slop=0.05)
    pairs = feed(sync, [(0, "t"), (60, "t"), (30, "r")])  # RGB 30 is 30 ms from both
    assert stamps(pairs) == [(0, 30)] and sync.queue_lengths() == (1, 0)


def test_negative_matching_times_near_zero_wait_for_a_better_partner():
    # sim time starts at 0: thermal stamped 10 ms with a 30 ms offset matches at -20 ms
    sync = PairSynchronizer(slop=0.05, thermal_offset=0.03)
    assert sync.add_thermal(10 * MS, "t10") == []
    assert sync.add_rgb(5 * MS, "r5") == []  # 25 ms apart: a later thermal frame could be closer
    assert stamps(sync.add_thermal(36 * MS, "t36")) == [(36, 5)]  # matches at 6 ms
    assert sync.stats.dropped_thermal == 1


def test_lower_bound_proves_a_tie_optimal():
    # thermal frames are >= 4 ms apart: the next one is at 4 ms at the earliest, as far from RGB 2 as
    # thermal 0 is, and an equal spread does not replace the candidate, so the pair goes out at once
    sync = PairSynchronizer(slop=0.01, inter_message_lower_bound=(0.004, 0.0))
    assert sync.add_thermal(0, "t0") == []
    assert stamps(sync.add_rgb(2 * MS, "r2")) == [(0, 2)]
