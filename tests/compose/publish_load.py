#!/usr/bin/env python3
"""Steady keyed publishing on several topics, for the compose test (standard library only).

    publish_load.py URL OUTDIR --topics A,B,... --count N [--interval S]
                    [--deadline SECONDS] [--token-env VAR]

One thread per topic publishes `<topic> 1` ... `<topic> N` as JSON to URL,
one after the other, every S seconds. Each event has its own
Idempotency-Key, and is retried with that same key until it is answered
201: after a 429 when Retry-After says, after a 5xx, a timeout or a broken
connection at once (a 5xx or a lost answer may have stored it: the key
makes the retry store it at most once). A 400, 401, 403, 413, 415 or 422 is
a failure of the test, not something to retry.

Writes OUTDIR/published-<topic>.tsv, one `id<TAB>message` line per 201 in
publish order (what check_events.py reads), OUTDIR/answers.tsv, one
`<unix time><TAB><topic><TAB><status>` line per attempt as it ended, and at
the end one JSON line of
figures on stdout: events, attempts, answers by status, refusals by topic
(every answer but a 201 or a 429, and every lost answer), replays (a retry
answered with the first publish's event), the longest time one event took
until its 201. Exits 0 once every event of every topic got its 201, 1 if
one did not by the deadline or was refused for good.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid

PERMANENT = {400, 401, 403, 404, 405, 413, 415, 422}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("outdir")
    parser.add_argument("--topics", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--token-env", help="environment variable holding a publish token")
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.url)
    token = os.environ.get(args.token_env, "") if args.token_env else ""
    deadline = time.monotonic() + args.deadline
    lock = threading.Lock()
    answers = []
    figures = {"events": 0, "attempts": 0, "statuses": {}, "refused": {}, "replayed": 0,
               "slowest_event_s": 0.0, "failed": []}

    def count(topic: str, status: str) -> None:
        with lock:
            answers.append(f"{time.time():.3f}\t{topic}\t{status}\n")
            figures["attempts"] += 1
            figures["statuses"][status] = figures["statuses"].get(status, 0) + 1
            if status not in ("201", "429"):
                figures["refused"][topic] = figures["refused"].get(topic, 0) + 1

    def publish_topic(topic: str) -> None:
        path = os.path.join(args.outdir, f"published-{topic}.tsv")
        with open(path, "w", buffering=1, encoding="utf-8") as out:
            for n in range(1, args.count + 1):
                message = f"{topic} {n}"
                key = str(uuid.uuid4())
                body = json.dumps({"message": message, "topic": topic})
                headers = {"Content-Type": "application/json", "Idempotency-Key": key}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                started = time.monotonic()
                while True:
                    if time.monotonic() > deadline:
                        with lock:
                            figures["failed"].append(f"{message}: no 201 by the deadline")
                        return
                    pause = 0.3
                    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
                    try:
                        conn.request("POST", url.path, body=body, headers=headers)
                        response = conn.getresponse()
                        answer = response.read(2000).decode("utf-8", "replace")
                        count(topic, str(response.status))
                        if response.status == 201:
                            event_id = response.getheader("X-Event-Id")
                            if not event_id:
                                with lock:
                                    figures["failed"].append(f"{message}: a 201 without X-Event-Id")
                                return
                            if response.getheader("Idempotent-Replayed") == "true":
                                with lock:
                                    figures["replayed"] += 1
                            out.write(f"{event_id}\t{message}\n")
                            break
                        if response.status in PERMANENT:
                            with lock:
                                figures["failed"].append(f"{message}: {response.status} {answer}")
                            return
                        if response.status == 429:
                            pause = min(float(response.getheader("Retry-After") or 1), 2.0)
                    except (OSError, http.client.HTTPException) as error:
                        count(topic, type(error).__name__)
                    finally:
                        conn.close()
                    time.sleep(pause)
                took = time.monotonic() - started
                with lock:
                    figures["events"] += 1
                    figures["slowest_event_s"] = max(figures["slowest_event_s"], round(took, 2))
                time.sleep(args.interval)

    threads = [threading.Thread(target=publish_topic, args=(topic,), daemon=True)
               for topic in args.topics.split(",") if topic]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 10)
    with lock, open(os.path.join(args.outdir, "answers.tsv"), "w", encoding="utf-8") as out:
        out.writelines(answers)
    print(json.dumps(figures, sort_keys=True))
    return 0 if figures["events"] == args.count * len(threads) and not figures["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
