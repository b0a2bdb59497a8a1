#!/usr/bin/env python3
"""Checks the NDJSON event streams against the OpenAPI document's `Event` schema.

schemathesis reads one JSON document per answer, so it cannot check a stream line by line. This
runs sessions on the sandbox profile whose scripts make every agent outcome happen (passed,
failed, error, panic, hang past the deadline, skipped by fail-fast), streams each, replays one
with GET .../events, decides one that went to review and replays its history (the review's
events), and validates every line with the same JSON Schema validator schemathesis
uses (jsonschema_rs, from scripts/fuzz-requirements.txt). It fails when a line does not match,
or when an event type the service can send in one instance's lifetime never came.
`session.resumed` and `session.interrupted` need a restart and are covered by the Rust tests.

Usage: check_events.py BASE_URL API_KEY
"""

import json
import sys
import urllib.request

import jsonschema_rs

# An 8x8 PNG: sandbox agents look at nothing, but intake decodes every image.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mM4MS0FK2IYWhIADlxwgebZ8zEAAAAASUVORK5CYII="
)

SCRIPTS = [
    {},
    {"liveness": {"result": "fail"}},
    {"ocr": {"result": "error"}},
    {"face_match": {"result": "panic"}},
    {"ocr": {"result": "hang"}},
]

EXPECTED = {
    "session.started",
    "agent.started",
    "agent.completed",
    "agent.failed",
    "agent.timed_out",
    "agent.skipped",
    "session.completed",
    "review.opened",
    "review.decided",
    "review.resolved",
}


def request(base, key, path, body=None, accept="application/x-ndjson"):
    headers = {"Authorization": f"Bearer {key}", "Accept": accept}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    return urllib.request.urlopen(
        urllib.request.Request(base + path, data=data, headers=headers), timeout=30
    )


def lines(answer):
    content_type = answer.headers.get("Content-Type", "")
    if not content_type.startswith("application/x-ndjson"):
        raise SystemExit(f"a stream answered as {content_type!r}")
    return [json.loads(line) for line in answer.read().decode().splitlines() if line]


def main():
    base, key = sys.argv[1].rstrip("/"), sys.argv[2]
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as answer:
        document = json.load(answer)
    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/Event", "components": document["components"]}
    )
    seen, faults, checked = set(), [], 0
    streams = []
    for script in SCRIPTS:
        body = {
            "selfie": {"frames": [PNG]},
            "document": {"type": "passport", "front": PNG},
            "sandbox": script,
        }
        with request(base, key, "/v1/sessions", body) as answer:
            streams.append((json.dumps(script), lines(answer)))
    first = streams[0][1][0]["session_id"]
    with request(base, key, f"/v1/sessions/{first}/events") as answer:
        streams.append(("replay", lines(answer)))
    # A session the agents sent to review, decided by a reviewer: its history goes on.
    reviewed = next(
        events[0]["session_id"]
        for _, events in streams
        if any(e.get("decision") == "review" for e in events)
    )
    decision = {"decision": "approved", "reasons": ["verified_manually"], "note": "checked"}
    with request(
        base, key, f"/v1/sessions/{reviewed}/review", decision, "application/json"
    ) as answer:
        answer.read()
    with request(base, key, f"/v1/sessions/{reviewed}/events") as answer:
        streams.append(("reviewed", lines(answer)))
    for name, events in streams:
        types = [event.get("type") for event in events]
        ends = [i for i, kind in enumerate(types) if kind == "session.completed"]
        if not ends or not all(t.startswith("review.") for t in types[ends[-1] + 1 :]):
            faults.append(
                f"{name}: the stream did not end with session.completed (and a review's events)"
            )
        for event in events:
            checked += 1
            seen.add(event.get("type"))
            for error in validator.iter_errors(event):
                faults.append(f"{name}: {event.get('type')}: {error.message}")
    missing = EXPECTED - seen
    if missing:
        faults.append(f"never sent: {', '.join(sorted(missing))}")
    for fault in faults:
        print(f"check_events: {fault}", file=sys.stderr)
    if faults:
        return 1
    print(f"check_events: {checked} events of {len(streams)} streams match the document")
    return 0


if __name__ == "__main__":
    sys.exit(main())
