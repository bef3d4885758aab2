"""How much of a corpus gives training windows, per bar grid and over all of them.

Runs the dataset builder's per-file step (`dataset.process_files`, cached like a
build) on every tune of the corpus for each grid (`meters.GRIDS`) and window
length, then prints, per grid, the tunes that give windows; the tunes that give
windows on at least one of the meter-following grids (duple, triple, compound,
compound-triple: each tune is trained in its own meter); the tunes too short for
a window at that length (usable bars exist, but no stretch of N bars); and the
reasons the rest give nothing. The Magenta-style grid (16-step bars whatever the
meter) is shown for comparison.

Usage: python scripts/meter_coverage.py [--corpus folk] [--bars 4,16] [--workers 2]
       [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import time
from pathlib import Path

from jax_musicvae.data.corpus import materialize
from jax_musicvae.data.dataset import BuildSettings, default_cache_dir, process_files

FOLLOWING = ("duple", "triple", "compound", "compound-triple")
OTHER_METER = re.compile(r"meter (\d+)/(\d+) \(bar of")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="folk")
    parser.add_argument("--bars", default="4,16")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    songs = materialize(args.corpus, args.cache_dir / "corpus", workers=args.workers)
    total = len(songs)
    print(f"corpus:{args.corpus}: {total} tunes")
    report: dict = {"corpus": args.corpus, "tunes": total, "bars": {}}
    for bars in (int(b) for b in args.bars.split(",")):
        t0 = time.time()
        results = {}
        for name in (*FOLLOWING, "magenta"):
            settings = BuildSettings(representation="melody90", num_bars=bars, meter=name)
            results[name] = process_files(
                songs,
                settings,
                workers=args.workers,
                cache_dir=args.cache_dir / "windows",
                progress=False,
            )
        with_windows = {
            name: {i for i, r in enumerate(rs) if r.reason is None} for name, rs in results.items()
        }
        any_grid = set().union(*(with_windows[name] for name in FOLLOWING))
        # Tunes in a meter no named grid keeps (3/2, 6/4 ...): try the grid of that meter.
        own: dict[str, set[int]] = {}
        for i, result in enumerate(results["duple"]):
            if i in any_grid or result.reason is None:
                continue
            for numerator, denominator in OTHER_METER.findall(result.reason):
                own.setdefault(f"{numerator}/{denominator}", set()).add(i)
        own_with_windows: dict[str, int] = {}
        for meter, indices in sorted(own.items()):
            chosen = sorted(indices)
            try:
                settings = BuildSettings(representation="melody90", num_bars=bars, meter=meter)
            except ValueError:  # a bar or beat that is not a whole number of steps
                continue
            found = process_files(
                [songs[i] for i in chosen],
                settings,
                workers=args.workers,
                cache_dir=args.cache_dir / "windows",
                progress=False,
            )
            for i, r in zip(chosen, found, strict=True):
                results.setdefault(meter, [None] * total)[i] = r
            kept = {i for i, r in zip(chosen, found, strict=True) if r.reason is None}
            own_with_windows[meter] = len(kept)
            any_grid |= kept
        too_short = {
            i
            for rs in results.values()
            for i, r in enumerate(rs)
            if r is not None and r.reason is not None and r.reason.startswith("no window")
        } - any_grid
        rest = collections.Counter()
        for i in range(total):
            if i in any_grid or i in too_short:
                continue
            rest[results["duple"][i].reason or ""] += 1
        entry = {name: len(with_windows[name]) for name in (*FOLLOWING, "magenta")} | {
            "own_meter_grids": own_with_windows,
            "any_meter_following_grid": len(any_grid),
            "too_short": len(too_short),
            "other_reasons": dict(rest.most_common()),
        }
        report["bars"][bars] = entry
        print(f"\n{bars} bars ({time.time() - t0:.0f} s):")
        print("| grid | tunes with windows | share |")
        print("|---|---|---|")
        for name in (*FOLLOWING, "magenta"):
            n = len(with_windows[name])
            print(f"| {name} | {n} | {n / total:.1%} |")
        for meter, n in own_with_windows.items():
            if n:
                print(f"| {meter} (its own grid) | {n} | {n / total:.1%} |")
        print(f"| any meter-following grid | {len(any_grid)} | {len(any_grid) / total:.1%} |")
        print(f"too short for {bars} bars on their own grid: {len(too_short)}")
        for reason, n in rest.most_common(8):
            print(f"  {n}: {reason}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
