#!/usr/bin/env python3
"""Checks what an sse_client.py client received against what was published.

    check_events.py CLIENT.jsonl PUBLISHED.tsv [--skip N]

PUBLISHED.tsv has one `id<TAB>message` line per 201, in publish order. The
client must have received exactly those messages (after the first N), with
those ids, each once, in that order, and no other event (no `reset`).
Prints how many times the client reconnected; exits 1 with the difference
on stderr otherwise.
"""

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client")
    parser.add_argument("published")
    parser.add_argument("--skip", type=int, default=0)
    args = parser.parse_args()

    with open(args.client, encoding="utf-8") as f:
        notes = [json.loads(line) for line in f if line.strip()]
    with open(args.published, encoding="utf-8") as f:
        want = [tuple(line.rstrip("\n").split("\t", 1)) for line in f][args.skip:]

    events = [n for n in notes if n["kind"] == "event"]
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
    print(sum(1 for n in notes if n["kind"] == "connected") - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
