"""``diffmf bag info``: topics, types, counts, rates and duration of a bag, counted from the
messages in the storage."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from diffmf_core.tools.bag.common import iter_messages, open_reader


def bag_info(path: Path) -> dict:
    """Topics (type, count, rate), message count, start/end/duration of a bag.

    Counts and times come from the messages in the storage, not from metadata.yaml (which a tool
    may have written wrong); ``metadata_mismatch`` lists the topics whose metadata count differs."""
    with open_reader(path) as reader:
        counts = {name: 0 for name in reader.topics}
        start = end = None
        for conn, bag_ns, _ in iter_messages(reader):
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            start = bag_ns if start is None else min(start, bag_ns)
            end = bag_ns if end is None else max(end, bag_ns)
        duration_s = (end - start) / 1e9 if start is not None else 0.0
        types = {name: t.msgtype for name, t in reader.topics.items()}
        mismatch = {name: {"metadata": t.msgcount, "storage": counts.get(name, 0)}
                    for name, t in reader.topics.items() if t.msgcount != counts.get(name, 0)}
    topics = {
        name: {"type": types.get(name, "?"), "count": n,
               "rate_hz": round((n - 1) / duration_s, 3) if duration_s > 0 and n > 1 else None}
        for name, n in counts.items()}
    return {"path": str(path), "messages": sum(counts.values()), "duration_s": duration_s,
            "start_ns": start, "end_ns": end, "topics": topics, "metadata_mismatch": mismatch}


def _cmd_info(args) -> int:
    info = bag_info(Path(args.bag))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bag:       {info['path']}")
    print(f"messages:  {info['messages']}")
    print(f"duration:  {info['duration_s']:.3f} s")
    if info["start_ns"] is not None:
        print(f"start/end: {info['start_ns'] / 1e9:.6f} / {info['end_ns'] / 1e9:.6f} s")
    width = max([len(t) for t in info["topics"]] + [5])
    for name, t in sorted(info["topics"].items()):
        rate = f"{t['rate_hz']:.2f} Hz" if t["rate_hz"] else "-"
        print(f"  {name:<{width}}  {t['count']:>6}  {rate:>10}  {t['type']}")
    for name, m in sorted(info["metadata_mismatch"].items()):
        print(f"warning: metadata.yaml says {m['metadata']} message(s) on {name}, the storage holds "
              f"{m['storage']} (counts above are from the storage)", file=sys.stderr)
    return 0
