#!/usr/bin/env python3
"""A resuming EventSource client for the compose test (standard library only).

    sse_client.py URL OUT (--expect N | --until DATA) [--deadline SECONDS] [--retry-ms MS]

Connects to URL (http only), parses the stream as the WHATWG EventSource
algorithm does (lines end at CRLF, LF or CR; an event is dispatched at a
blank line; an event cut off by the end of the stream is dropped), and
reconnects whenever the stream ends or fails, sending the last event id in
Last-Event-ID, as a browser does. It writes to OUT one JSON line per line of
news: {"kind": "connected"|"event"|"disconnected", ...}, and exits 0 once it
has seen N events of type `message` (or one whose data is DATA), or 1 at
the deadline.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse


def split_lines(buffer: bytes):
    """Complete lines (ended by CRLF, LF or CR) and the unfinished rest."""
    lines, start, i = [], 0, 0
    while i < len(buffer):
        byte = buffer[i]
        if byte == 0x0A:
            lines.append(buffer[start:i])
            start = i = i + 1
        elif byte == 0x0D:
            if i + 1 == len(buffer):
                break  # CR at the end: wait to see whether LF follows
            lines.append(buffer[start:i])
            i += 2 if buffer[i + 1] == 0x0A else 1
            start = i
        else:
            i += 1
    return lines, buffer[start:]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--expect", type=int)
    parser.add_argument("--until", help="stop after the `message` event with this data")
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--retry-ms", type=int, default=300,
                        help="reconnection delay (the server's retry: is 3 s; the test is in a hurry)")
    args = parser.parse_args()
    if (args.expect is None) == (args.until is None):
        parser.error("give one of --expect and --until")

    url = urllib.parse.urlsplit(args.url)
    target = url.path + ("?" + url.query if url.query else "")
    deadline = time.monotonic() + args.deadline
    last_id = ""
    messages = 0

    with open(args.out, "a", buffering=1, encoding="utf-8") as out:
        def note(kind: str, **fields) -> None:
            out.write(json.dumps({"kind": kind, "t": round(time.time(), 3), **fields}) + "\n")

        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80,
                                              timeout=max(1.0, deadline - time.monotonic()))
            try:
                headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
                if last_id:
                    headers["Last-Event-ID"] = last_id
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    body = response.read(2000).decode("utf-8", "replace")
                    note("disconnected", reason=f"status {response.status}: {body}")
                    if response.status == 400:
                        return 1
                    continue
                note("connected", last_event_id=last_id,
                     content_type=response.getheader("Content-Type"))
                event_type, data, event_id = "", [], None
                pending = b""
                # read1: whatever has arrived, so events are seen as they come.
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    pending += chunk
                    lines, pending = split_lines(pending)
                    for raw in lines:
                        line = raw.decode("utf-8", "replace")
                        if line == "":
                            if event_id is not None:
                                last_id = event_id
                            if data:
                                kind = event_type or "message"
                                note("event", id=last_id, event=kind, data="\n".join(data))
                                if kind == "message":
                                    messages += 1
                                    if args.until is not None and "\n".join(data) == args.until:
                                        return 0
                            event_type, data = "", []
                            if args.expect is not None and messages >= args.expect:
                                return 0
                            continue
                        if line.startswith(":"):
                            continue
                        field, _, value = line.partition(":")
                        if value.startswith(" "):
                            value = value[1:]
                        if field == "data":
                            data.append(value)
                        elif field == "event":
                            event_type = value
                        elif field == "id" and "\0" not in value:
                            event_id = value
                note("disconnected", reason="stream ended")
            except (OSError, http.client.HTTPException) as error:
                note("disconnected", reason=f"{type(error).__name__}: {error}")
            finally:
                conn.close()
            time.sleep(args.retry_ms / 1000)
        note("deadline", messages=messages)
    return 1


if __name__ == "__main__":
    sys.exit(main())
