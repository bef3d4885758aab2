"""`musicvae data build SOURCE --out DIR`: MIDI or the embedded corpus -> window dataset."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def _transpose(text: str) -> tuple[int, ...]:
    """`-5:5` (a range, both ends included) or `-2,0,2` (a list) of semitones."""
    try:
        if ":" in text:
            low, high = (int(x) for x in text.split(":"))
            return tuple(range(low, high + 1))
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--transpose {text!r}: use LOW:HIGH or a,b,c") from None


def _split(text: str) -> tuple[float, float, float]:
    parts = tuple(float(x) for x in text.split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("--split needs three fractions: train,validation,test")
    return parts  # type: ignore[return-value]


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build training datasets from MIDI")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser(
        "build",
        help="MIDI file/folder, Lakh layout or corpus:NAME -> window dataset",
        description=(
            "SOURCE is a MIDI file, a folder (recursive, .mid/.midi), a Lakh clean_midi or "
            "lmd_matched folder, or corpus:folk | corpus:bach | corpus:folk+bach ..."
        ),
    )
    p.add_argument("source")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--representation", choices=("pianoroll61", "melody90"), default="pianoroll61")
    p.add_argument("--bars", type=int, default=16, help="bars per window")
    p.add_argument(
        "--meter",
        default="duple",
        help="bar grid and the meters kept on it: duple (4/4, 2/4 paired, 4/2 split; 16 "
        "steps a bar), triple (3/4; 12), compound (6/8, 3/8 paired, 12/8 split; 12), "
        "compound-triple (9/8; 18), magenta (ignore the declared meter, 16-step bars), "
        "meters of one grid such as 6/8,12/8, or any other meter such as 3/2 (a grid of its "
        "own) (default duple)",
    )
    p.add_argument(
        "--danceability",
        default=None,
        help="spotify | table:FILE | labels | rhythm | none "
        "(default: labels for corpus:*, rhythm otherwise)",
    )
    p.add_argument("--missing", default="drop", help="songs without danceability: drop|fill:V")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0, help="split, cap and shuffle seed")
    p.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1), help="train,val,test")
    p.add_argument("--max-windows-per-song", type=int, default=None)
    p.add_argument(
        "--max-silent-run",
        type=_optional_int,
        default=16,
        help="drop windows with more consecutive silent steps (none: keep)",
    )
    p.add_argument(
        "--transpose",
        type=_transpose,
        default=(),
        help="augment train windows by semitone shifts: LOW:HIGH or a,b,c",
    )
    p.add_argument("--layout", choices=("auto", "folder", "clean_midi", "lmd_matched"))
    p.add_argument("--cache-dir", default=None, help="default $JAX_MUSICVAE_CACHE or ~/.cache")
    p.add_argument("--max-file-mb", type=float, default=16.0, help="skip larger files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_build, layout="auto")


def run_build(args: argparse.Namespace) -> int:
    # Imported here so that `musicvae --help` does not load numpy and symusic.
    from jax_musicvae.data.dataset import BuildSettings, build_dataset

    danceability = args.danceability
    if danceability is None and not args.source.startswith("corpus:"):
        danceability = "rhythm"
    try:
        settings = BuildSettings(
            representation=args.representation,
            num_bars=args.bars,
            max_silent_run=args.max_silent_run,
            max_windows_per_song=args.max_windows_per_song,
            transpose=args.transpose,
            seed=args.seed,
            split=args.split,
            danceability=danceability,
            missing=args.missing,
            max_file_bytes=int(args.max_file_mb * 2**20),
            meter=args.meter,
        )
        result = build_dataset(
            args.source,
            args.out,
            settings,
            workers=args.workers,
            cache_dir=args.cache_dir,
            layout=args.layout,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (RuntimeError, ValueError) as e:  # BuildError, SpotifyError, TableError
        logger.error("%s", e)
        return 1
    counts = result.manifest["counts"]
    splits = ", ".join(
        f"{k} {v['windows']} ({v['songs']} songs)" for k, v in counts["splits"].items()
    )
    print(
        f"{result.out}: {counts['files']} files, {counts['parsed']} usable, "
        f"{counts['skipped']} skipped, {counts['songs']} songs, {counts['windows']} windows: "
        f"{splits}; {result.cached_files} files from cache; {result.seconds:.1f} s"
    )
    if counts["danceability_missing"]:
        print(
            f"danceability missing for {counts['danceability_missing']} songs "
            f"({counts['danceability_dropped']} dropped, {counts['danceability_filled']} filled)"
        )
    reasons: dict[str, int] = {}
    for entry in result.manifest["skipped"]:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  skipped {n}: {reason}")
    meters = ", ".join(
        f"{meter} {v['songs']} songs / {v['windows']} windows"
        for meter, v in sorted(counts["meters"].items(), key=lambda kv: -kv[1]["songs"])
    )
    manifest = result.manifest
    print(f"{manifest['grid']} grid ({manifest['steps_per_bar']} steps a bar): {meters}")
    return 0
