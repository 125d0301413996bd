"""Runs INSIDE the agentlightning==1.0.2 venv (Python >= 3.12; never imports otel_tokenfix): posts
model_request / reward events to agent-lightning v1.0's own FastAPI app (in-process test client), as
its gateway and our corrected re-post would, and prints what its trainer reads back
(``GET /api/rollouts/{rid}/events?format=triplet``).

Usage: python agl1_events.py EVENTS.json -> stdout: {"triplet_events": [...], "all_events": N}
EVENTS.json: a list of event bodies ``{"event_type": ..., "data": ...}`` posted in order.
"""

from __future__ import annotations

import json
import sys

from agentlightning.server.app import create_app
from fastapi.testclient import TestClient


def main(path: str) -> None:
    with open(path) as fh:
        bodies = json.load(fh)
    app = create_app({"key": "", "default_proxy": {"model_name": "interop"}})
    client = TestClient(app)  # no lifespan: the store routes need no proxy state
    created = client.post("/api/rollouts", json=[{"input": {"task": "interop"}}])
    created.raise_for_status()
    rid = created.json()[0]["rollout_id"]
    for body in bodies:
        r = client.post(f"/api/rollouts/{rid}/attempt/0/events", json=body)
        r.raise_for_status()
    all_events = client.get(f"/api/rollouts/{rid}/events").json()
    triplet = client.get(f"/api/rollouts/{rid}/events", params={"format": "triplet"}).json()
    print(json.dumps({"triplet_events": triplet, "all_events": len(all_events)}))


if __name__ == "__main__":
    main(sys.argv[1])
