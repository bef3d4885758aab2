"""How well the `rhythm` danceability estimate separates dance tunes from airs and chorales.

Converts the embedded corpus (cached), reads each MIDI file with the dataset
builder's parser on every bar grid (`meters.GRIDS`: duple, triple, compound,
compound-triple) and scores it on the grid that keeps most of it, so jigs are
read in 6/8, waltzes in 3/4 and slip jigs in 9/8 (`--grids duple` gives the
duple-only figures of earlier versions). It prints the ROC AUC of
`estimate_danceability` and of each feature for

- dance-labelled tunes (labels scored >= 0.7 by the `labels` scale: reel, jig,
  hornpipe, polka, strathspey, waltz, ...) against airs, laments and chorales;
- the same dances against every slow or sung label (adds ballads, songs,
  lullabies, hymns from the Essen collection);
- each dance type on its own against airs, laments and chorales.

Usage: python scripts/rhythm_auc.py [--corpus folk+bach] [--grids duple,triple,...]
"""

from __future__ import annotations

import argparse
import collections
import logging
import pathlib
import time

import numpy as np

from jax_musicvae.data.corpus import materialize
from jax_musicvae.data.danceability import LABEL_DANCEABILITY
from jax_musicvae.data.dataset import default_cache_dir
from jax_musicvae.data.meters import GRIDS
from jax_musicvae.data.midi_io import MidiError, parse_midi
from jax_musicvae.data.rhythm import WEIGHTS, estimate_danceability, rhythm_features
from jax_musicvae.statistics import roc_auc

DANCES = {label for label, value in LABEL_DANCEABILITY.items() if value >= 0.7}
AIRS_AND_CHORALES = {"air", "lament", "chorale"}
SLOW_OR_SUNG = {label for label, value in LABEL_DANCEABILITY.items() if value <= 0.35}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="folk+bach")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=default_cache_dir() / "corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--grids",
        default="duple,triple,compound,compound-triple",
        help="bar grids to read each tune on (the one keeping most of it is scored)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    t0 = time.time()
    songs = materialize(args.corpus, args.cache_dir, workers=args.workers)
    print(f"corpus:{args.corpus}: {len(songs)} tunes ready in {time.time() - t0:.1f} s")

    grids = [GRIDS[name] for name in args.grids.split(",")]
    labelled = [s for s in songs if s.label in DANCES | SLOW_OR_SUNG]
    values: dict[str, list[float]] = collections.defaultdict(list)
    features: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    skipped = collections.Counter()
    read_on: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    t0 = time.time()
    for song in labelled:
        parsed = []
        for grid in grids:
            try:
                parsed.append(parse_midi(song.path, grid=grid))
            except MidiError:
                continue
        if not parsed:
            skipped[song.label] += 1  # no section on any of the grids
            continue
        best = max(parsed, key=lambda p: p.num_steps)
        read_on[song.label][best.grid.name] += 1
        rhythm = best.rhythm()
        values[song.label].append(estimate_danceability(rhythm))
        for name, value in rhythm_features(rhythm).items():
            features[name][song.label].append(value)
    print(f"parsed {len(labelled)} labelled tunes in {time.time() - t0:.1f} s")

    print("\nlabel          used  skipped  mean estimate  grids")
    for label in sorted(set(values) | set(skipped), key=lambda k: -LABEL_DANCEABILITY[k]):
        v = values.get(label, [])
        mean = f"{np.mean(v):.3f}" if v else "-"
        on = ", ".join(f"{g} {n}" for g, n in read_on[label].most_common())
        print(f"{label:12s} {len(v):6d} {skipped[label]:8d}  {mean:>13s}  {on}")

    def pool(groups: set[str], table: dict[str, list[float]]) -> np.ndarray:
        return np.array([x for g in sorted(groups) for x in table.get(g, [])])

    for title, negatives in (
        ("dances vs airs+laments+chorales", AIRS_AND_CHORALES),
        ("dances vs all slow/sung labels", SLOW_OR_SUNG),
    ):
        pos, neg = pool(DANCES, values), pool(negatives, values)
        if not len(pos) or not len(neg):
            print(f"\n{title}: not enough tunes")
            continue
        print(f"\n{title}: {len(pos)} vs {len(neg)} tunes, ROC AUC = {roc_auc(pos, neg):.3f}")
        for name in [*WEIGHTS, "raw_onsets_per_beat", "raw_syncopation"]:
            auc = roc_auc(pool(DANCES, features[name]), pool(negatives, features[name]))
            print(f"  feature {name:20s} AUC {auc:.3f}")

    negatives = pool(AIRS_AND_CHORALES, values)
    print("\neach dance type vs airs+laments+chorales:")
    for label in sorted(DANCES & set(values), key=lambda k: -len(values[k])):
        if len(values[label]) >= 5 and len(negatives):
            auc = roc_auc(np.array(values[label]), negatives)
            print(f"  {label:12s} {len(values[label]):5d} tunes  AUC {auc:.3f}")


if __name__ == "__main__":
    main()
