"""Load test of `musicvae serve`: latency of the playground's API on this machine.

Loads a checkpoint, compiles (warms) it as the server does, serves it on
127.0.0.1, then measures

- edits one at a time (one client, `--solo` requests): the latency a user at the
  page feels when dragging the danceability slider;
- a mixed load (`--requests` requests of sample / edit / interpolate from
  `--clients` concurrent clients): errors and p50/p95 per route.

Prints a table with the CPU model and writes the figures as JSON (`--out`).

    python scripts/playground_load.py --checkpoint runs/quickstart/run [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from jax_musicvae.generate import TrainedModel
from jax_musicvae.playground.app import create_app
from jax_musicvae.playground.load import BackgroundServer, load_test, post
from jax_musicvae.playground.service import Playground


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--solo", type=int, default=100, help="sequential edits timed")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    load_before = os.getloadavg()[0]
    playground = Playground(TrainedModel.load(args.checkpoint))
    warm_seconds = playground.warm_up()
    with BackgroundServer(create_app(playground)) as server:
        status, sampled = post(f"{server.url}/api/sample", {"count": 1, "seed": 0})
        tokens = sampled["melodies"][0]["tokens"]
        solo = []
        for i in range(args.solo):
            start = time.perf_counter()
            status, _ = post(f"{server.url}/api/edit", {"tokens": tokens, "danceability": i / 99})
            solo.append((time.perf_counter() - start) * 1000)
            if status != 200:
                raise SystemExit(f"edit failed with status {status}")
        report = load_test(server.url, args.requests, args.clients)
    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "checkpoint": args.checkpoint,
        "warm_up_seconds": round(warm_seconds, 1),
        "solo_edit": {
            "requests": len(solo),
            "p50_ms": round(float(np.percentile(solo, 50)), 1),
            "p95_ms": round(float(np.percentile(solo, 95)), 1),
        },
        "load": report,
    }
    print(f"{report['cpu']}, {report['cores']} cores; warm-up {report['warm_up_seconds']} s")
    solo_edit = report["solo_edit"]
    print(f"solo edits: p50 {solo_edit['p50_ms']} ms, p95 {solo_edit['p95_ms']} ms")
    load = report["load"]
    print(
        f"{args.requests} requests from {args.clients} clients in {load['seconds']} s "
        f"({load['requests_per_second']}/s)"
    )
    print("| route | requests | errors | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for route in ("all", "sample", "edit", "interpolate"):
        if route in load:
            r = load[route]
            print(
                f"| {route} | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} "
                f"| {r['max_ms']} |"
            )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
