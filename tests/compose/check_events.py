#!/usr/bin/env python3
"""Checks what an sse_client.py client received against what was published.

    check_events.py CLIENT.jsonl PUBLISHED.tsv [--skip N] [--allow-reset]

PUBLISHED.tsv has one `id<TAB>message` line per 201, in publish order. The
client must have received exactly those messages (after the first N), with
those ids, each once, in that order, and no other event (no `reset`).
Prints how many times the client reconnected; exits 1 with the difference
on stderr otherwise.

With --allow-reset a `reset` event may stand for the events it announces
missing: right after one, the next message may skip ahead (never back);
everything else holds. Prints the reconnects, the resets and the events
they covered.
"""

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client")
    parser.add_argument("published")
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--allow-reset", action="store_true")
    args = parser.parse_args()

    with open(args.client, encoding="utf-8") as f:
        notes = [json.loads(line) for line in f if line.strip()]
    with open(args.published, encoding="utf-8") as f:
        want = [tuple(line.rstrip("\n").split("\t", 1)) for line in f][args.skip:]

    events = [n for n in notes if n["kind"] == "event"]
    reconnects = sum(1 for n in notes if n["kind"] == "connected") - 1
    if args.allow_reset:
        return check_with_resets(events, want, reconnects)
    got = [(e["id"], e["data"]) for e in events if e["event"] == "message"]
    others = [e for e in events if e["event"] != "message"]
    if others:
        print(f"unexpected events: {others[:3]}", file=sys.stderr)
        return 1
    if got != want:
        seen = [m for _, m in got]
        wanted = [m for _, m in want]
        missing = [m for m in wanted if m not in seen]
        dupes = sorted({m for m in seen if seen.count(m) > 1})
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        print(f"{len(got)} events, want {len(want)}; missing {missing[:5]}; duplicated {dupes[:5]}; "
              f"first difference at #{first}: got {got[first:first + 1]}, want {want[first:first + 1]}",
              file=sys.stderr)
        return 1
    print(reconnects)
    return 0


def check_with_resets(events, want, reconnects) -> int:
    """Every message in publish order, once; gaps only right after a reset."""
    next_wanted, resets, covered, after_reset = 0, 0, 0, False
    for event in events:
        if event["event"] == "reset":
            resets += 1
            after_reset = True
            continue
        if event["event"] != "message":
            print(f"unexpected event: {event}", file=sys.stderr)
            return 1
        got = (event["id"], event["data"])
        ahead = want[next_wanted:] if after_reset else want[next_wanted:next_wanted + 1]
        if got not in ahead:
            expected = want[next_wanted] if next_wanted < len(want) else "nothing more"
            print(f"got {got} where {expected} was due (a duplicate, out of order, or never "
                  f"acknowledged); {resets} reset(s) before it", file=sys.stderr)
            return 1
        skipped = ahead.index(got)
        covered += skipped
        next_wanted += skipped + 1
        after_reset = False
    if next_wanted < len(want):
        print(f"{len(want) - next_wanted} acknowledged events never arrived, from {want[next_wanted]} on, "
              f"and no reset announced them", file=sys.stderr)
        return 1
    print(reconnects, resets, covered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
