"""A bounded load test of the playground: concurrent clients mixing sample, edit, interpolate.

`BackgroundServer` runs the app on 127.0.0.1 in a thread (the load test and the
browser test use it); `load_test` sends requests from several client threads and
reports errors and latency percentiles per route.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import uvicorn

ROUTES = ("sample", "edit", "interpolate")


class BackgroundServer:
    """uvicorn serving `app` on 127.0.0.1 (a free port by default) until `stop()`."""

    def __init__(self, app: Any, port: int = 0) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the playground server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post(url: str, body: dict[str, Any], timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of a POST; 4xx/5xx answers are returned, not raised."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def load_test(url: str, requests: int = 300, clients: int = 8, seed: int = 0) -> dict[str, Any]:
    """Send `requests` requests from `clients` threads (a fixed random mix of the routes).

    Melodies for edit and interpolate are sampled first (not timed). Returns the
    count of non-200 answers and p50/p95/max latency in ms, overall and per route.
    """
    status, first = post(f"{url}/api/sample", {"count": 4, "seed": seed, "temperature": 1.0})
    if status != 200:
        raise RuntimeError(f"sampling the test melodies failed: {first}")
    melodies = [m["tokens"] for m in first["melodies"]]
    rng = np.random.default_rng(seed)
    plan = []
    for i in range(requests):
        route = ROUTES[int(rng.integers(len(ROUTES)))]
        a, b = (melodies[int(j)] for j in rng.choice(len(melodies), 2, replace=False))
        if route == "sample":
            body = {"count": 4, "seed": i, "temperature": 1.0, "danceability": 0.7}
        elif route == "edit":
            body = {"tokens": a, "danceability": float(rng.uniform()), "seed": i}
        else:
            body = {"start": a, "end": b, "steps": 5, "seed": i}
        plan.append((route, body))

    def send(item: tuple[str, dict[str, Any]]) -> tuple[str, int, float]:
        route, body = item
        start = time.perf_counter()
        status, _ = post(f"{url}/api/{route}", body)
        return route, status, (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(send, plan))
    seconds = time.perf_counter() - start

    def summary(rows: list[tuple[str, int, float]]) -> dict[str, float]:
        ms = np.array([r[2] for r in rows])
        return {
            "requests": len(rows),
            "errors": sum(r[1] != 200 for r in rows),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1),
        }

    report: dict[str, Any] = {
        "clients": clients,
        "seconds": round(seconds, 2),
        "requests_per_second": round(requests / seconds, 1),
        "all": summary(results),
    }
    for route in ROUTES:
        rows = [r for r in results if r[0] == route]
        if rows:
            report[route] = summary(rows)
    return report
