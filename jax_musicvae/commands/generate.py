"""`musicvae sample | interpolate | reconstruct | edit | attribute-vector | danceability-map |
analyze`.

Each generating command writes .mid files and a piano-roll PNG per result (an
interpolation as one grid), and a WAV per .mid with --wav. Problems the user can
fix (a MIDI file without a usable melody, a checkpoint that does not match, a
danceability request the model cannot honour) exit with status 2 and one line
naming the problem.
"""

from __future__ import annotations

import argparse
import io
import logging
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

WAV_RATE = 22050


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def _unit(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be in [0, 1]")
    return value


def _common(parser: argparse.ArgumentParser, temperature: float) -> None:
    parser.add_argument("--checkpoint", required=True, help="workdir, checkpoints/ or step folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--best", action="store_true", help="the step with the best val. ELBO")
    parser.add_argument("--out", type=Path, default=Path("generated"), help="output folder")
    parser.add_argument(
        "--temperature",
        type=float,
        default=temperature,
        help=f"0 = greedy (argmax), >0 samples softmax(logits/T) (default {temperature})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wav", action="store_true", help="also render WAVs (sine waves)")
    parser.add_argument("--tempo", type=float, default=120.0, help="bpm of the written MIDI")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per device call")
    parser.add_argument(
        "--attribute-vector",
        type=Path,
        default=None,
        help="JSON from `musicvae attribute-vector` (default: the step folder's)",
    )
    parser.add_argument(
        "--emphasis",
        type=_positive,
        default=1.0,
        help="ask for median + EMPHASIS * (c - median): > 1 moves the rhythm further than "
        "asked, so different requests differ more (models with an attribute dimension)",
    )
    _aim_option(parser)


def _aim_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aim",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="aim each request with the model's rhythm decoder: per code, the attribute value "
        "whose decoded note-ons have the requested rhythm estimate (default: models that "
        "have a rhythm decoder aim)",
    )


def _fitted_from_data(parser: argparse.ArgumentParser) -> None:
    """The options of a command that fits something to a checkpoint from a dataset split."""
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--best", action="store_true")
    parser.add_argument("--data", required=True, help="dataset folder (musicvae data build)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="new melodies from the prior")
    _common(p, temperature=1.0)
    p.add_argument("-n", "--num", type=int, default=4, help="how many melodies")
    p.add_argument("--danceability", type=_unit, default=None, help="requested c in [0, 1]")
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        help="decode-encode rounds after the first decoding (0: the plain prior decoding)",
    )
    p.set_defaults(one_device_per_core=True, func=_guard(run_sample))

    p = subparsers.add_parser("interpolate", help="slerp between the codes of two melodies")
    _common(p, temperature=0.0)
    p.add_argument("start", type=Path, help="first MIDI file")
    p.add_argument("end", type=Path, help="last MIDI file")
    p.add_argument("--steps", type=int, default=5, help="melodies, both ends included")
    p.add_argument(
        "--danceability", type=_unit, default=None, help="hold every step at this c in [0, 1]"
    )
    p.set_defaults(one_device_per_core=True, func=_guard(run_interpolate))

    p = subparsers.add_parser("reconstruct", help="encode and decode a melody")
    _common(p, temperature=0.0)
    p.add_argument("input", type=Path, help="MIDI file")
    p.set_defaults(one_device_per_core=True, func=_guard(run_reconstruct))

    p = subparsers.add_parser("edit", help="change a melody's danceability")
    _common(p, temperature=0.0)
    p.add_argument("input", type=Path, help="MIDI file")
    p.add_argument("--danceability", type=_unit, required=True, help="target c in [0, 1]")
    p.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="fraction of the way from the source's danceability to the target",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        help="decode-encode rounds: closer to the target (default 1; 0: the plain decoding)",
    )
    p.add_argument(
        "--keep-source",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the source's tokens wherever the request does not change the decoding "
        "(default; --no-keep-source: the model's decoding everywhere)",
    )
    p.set_defaults(one_device_per_core=True, func=_guard(run_edit))

    p = subparsers.add_parser(
        "attribute-vector",
        help="danceability direction in latent space for a conditioning-'none' model",
        description="Mean mu of the most danceable windows minus that of the least "
        "danceable ones, stored as attribute_vector.json in the checkpoint's step folder.",
    )
    _fitted_from_data(p)
    p.add_argument("--fraction", type=float, default=0.25, help="share in each group")
    p.add_argument(
        "--method",
        choices=("contrast", "regression"),
        default="contrast",
        help="contrast: mean mu of the top minus the bottom group (the paper's); "
        "regression: the ridge direction of danceability on mu, step calibrated by decoding",
    )
    p.add_argument(
        "--level",
        choices=("song", "window"),
        default="song",
        help="rank windows by their song's danceability or their own rhythm estimate",
    )
    p.add_argument("--max-windows", type=int, default=4096)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: step folder)")
    p.set_defaults(one_device_per_core=True, func=_guard(run_attribute_vector))

    p = subparsers.add_parser(
        "danceability-map",
        help="calibrate the danceability requests of a model with an attribute dimension",
        description="Decodes training windows and prior codes at a grid of values of the "
        "attribute dimension, records the mean rhythm estimate of the results and stores "
        "the map (danceability_map.json in the checkpoint's step folder) that sample, edit, "
        "interpolate and analyze then use to turn a requested danceability into a code.",
    )
    _fitted_from_data(p)
    p.add_argument("--windows", type=int, default=256, help="windows (and prior codes) decoded")
    p.set_defaults(one_device_per_core=True, func=_guard(run_danceability_map))

    p = subparsers.add_parser(
        "analyze",
        help="compare models: ELBO, KL, accuracy, danceability control",
        description="Evaluates every checkpoint on the same held-out split and writes "
        "results.md, results.json, control.png and mu_pca.png.",
    )
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--data", required=True, help="dataset folder (musicvae data build)")
    p.add_argument("--out", type=Path, default=Path("analysis"))
    p.add_argument("--split", default="test")
    p.add_argument("--max-windows", type=int, default=256)
    p.add_argument("--samples-per-value", type=int, default=32)
    p.add_argument("--edit-windows", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--prior-samples", type=int, default=256, help="samples for validity")
    p.add_argument("--prior-temperature", type=float, default=0.5, help="their temperature")
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        help="decode-encode rounds of the generated and edited melodies of the control measures",
    )
    p.add_argument(
        "--probe-windows",
        type=int,
        default=8000,
        help="training windows the code probe (danceability left in the rest of mu) is fitted on",
    )
    p.add_argument(
        "--values",
        type=_values,
        default=(),
        help="requested danceabilities, comma-separated (default: the nine deciles of the "
        "training windows' rhythm estimate)",
    )
    p.add_argument(
        "--emphasis",
        type=_positive,
        default=1.0,
        help="requests as median + EMPHASIS * (c - median) (models with an attribute dimension)",
    )
    _aim_option(p)
    p.add_argument(
        "--keep-source",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="edits keep the source's tokens wherever the request does not change the decoding "
        "(`musicvae edit`'s default; off here, to measure the plain decoding)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(one_device_per_core=True, func=_guard(run_analyze))


def _values(text: str) -> tuple[float, ...]:
    values = tuple(_unit(part) for part in text.split(","))
    if len(values) < 2:
        raise argparse.ArgumentTypeError("give at least two values, e.g. 0.6,0.7,0.8")
    return values


def _guard(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can fix into one logged line and exit status 2.

    FileNotFoundError covers a missing checkpoint (CheckpointError) or dataset.
    """

    def guarded(args: argparse.Namespace) -> int:
        from jax_musicvae.config import ConfigError
        from jax_musicvae.data.midi_io import MidiError
        from jax_musicvae.generate import GenerationError

        try:
            return run(args)
        except (GenerationError, MidiError, ConfigError, FileNotFoundError) as error:
            logger.error("%s", error)
            return 2

    return guarded


def _load(args: argparse.Namespace):
    from jax_musicvae.generate import TrainedModel

    return TrainedModel.load(
        args.checkpoint,
        step=args.step,
        best=args.best,
        batch_size=args.batch_size,
        attribute_vector=getattr(args, "attribute_vector", None),
        emphasis=getattr(args, "emphasis", 1.0),
        aim=getattr(args, "aim", None),
    )


def write_wav(tokens: np.ndarray, representation, path: Path, tempo_bpm: float) -> Path:
    """Render tokens with pretty_midi's sine-wave synthesizer (no soundfont) as 16-bit mono."""
    import pretty_midi

    from jax_musicvae.data.midi_io import tokens_to_score

    score = tokens_to_score(tokens, representation, tempo_bpm=tempo_bpm)
    audio = pretty_midi.PrettyMIDI(io.BytesIO(score.dumps_midi())).synthesize(fs=WAV_RATE)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    samples = (audio / peak * 0.9 * 32767 if peak > 0 else audio).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(WAV_RATE)
        handle.writeframes(samples.tobytes())
    return path


def _named(stem: Path, extension: str) -> Path:
    """stem + extension (with_suffix would cut a stem such as `x_danceability_0.90`)."""
    return stem.parent / (stem.name + extension)


def _write_melody(model, tokens: np.ndarray, path: Path, args: argparse.Namespace) -> None:
    """path.mid (and path.wav with --wav); prints what it wrote."""
    written = [model.write_midi(tokens, _named(path, ".mid"), tempo_bpm=args.tempo)]
    if args.wav:
        written.append(write_wav(tokens, model.representation, _named(path, ".wav"), args.tempo))
    for p in written:
        print(p)


def _roll(model, sequences: list[np.ndarray], titles: list[str], path: Path) -> None:
    from jax_musicvae.data.pianoroll import save_pianoroll_grid

    rep, grid = model.representation, model.grid
    print(save_pianoroll_grid(sequences, rep, path, titles=titles, columns=1, grid=grid))


def run_sample(args: argparse.Namespace) -> int:
    model = _load(args)
    tokens = model.sample(args.num, args.danceability, args.temperature, args.seed, args.refine)
    args.out.mkdir(parents=True, exist_ok=True)
    asked = "" if args.danceability is None else f", requested {args.danceability:.2f}"
    for i, melody in enumerate(tokens):
        stem = args.out / f"sample_{i:03d}"
        _write_melody(model, melody, stem, args)
        title = f"sample {i} (danceability estimate {model.danceability_of(melody):.2f}{asked})"
        _roll(model, [melody], [title], _named(stem, ".png"))
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    model = _load(args)
    tokens = model.interpolate(
        args.start, args.end, args.steps, args.temperature, args.seed, args.danceability
    )
    args.out.mkdir(parents=True, exist_ok=True)
    titles = []
    for i, melody in enumerate(tokens):
        _write_melody(model, melody, args.out / f"interpolate_{i:02d}", args)
        t = i / (len(tokens) - 1)
        titles.append(
            f"step {i}: t = {t:.2f} (danceability estimate {model.danceability_of(melody):.2f})"
        )
    _roll(model, list(tokens), titles, args.out / "interpolate.png")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    model = _load(args)
    source = model.melody(args.input)
    tokens = model.reconstruct(args.input, args.temperature, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.input.stem}_reconstruction"
    _write_melody(model, tokens, stem, args)
    accuracy = float(np.mean(tokens == source.tokens))
    logger.info("%s: token accuracy of the reconstruction %.3f", args.input, accuracy)
    _roll(
        model,
        [source.tokens, tokens],
        [f"source {args.input.name}", f"reconstruction (token accuracy {accuracy:.2f})"],
        _named(stem, ".png"),
    )
    return 0


def run_edit(args: argparse.Namespace) -> int:
    model = _load(args)
    source = model.melody(args.input)
    tokens = model.edit(
        args.input,
        args.danceability,
        args.strength,
        args.temperature,
        args.seed,
        args.refine,
        args.keep_source,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.input.stem}_danceability_{args.danceability:.2f}"
    _write_melody(model, tokens, stem, args)
    before, after = model.danceability_of(source.tokens), model.danceability_of(tokens)
    kept = float(np.mean(tokens == source.tokens))
    logger.info(
        "%s: danceability estimate %.3f -> %.3f (requested %.2f), %.0f%% tokens kept",
        args.input,
        before,
        after,
        args.danceability,
        100 * kept,
    )
    _roll(
        model,
        [source.tokens, tokens],
        [
            f"source {args.input.name} (estimate {before:.2f})",
            f"edit to {args.danceability:.2f} (estimate {after:.2f}, {kept:.0%} kept)",
        ],
        _named(stem, ".png"),
    )
    return 0


def run_attribute_vector(args: argparse.Namespace) -> int:
    from jax_musicvae.attributes import ATTRIBUTE_FILE, compute_attribute_vector
    from jax_musicvae.generate import GenerationError

    model = _load(args)
    try:
        vector = compute_attribute_vector(
            model,
            args.data,
            split=args.split,
            fraction=args.fraction,
            max_windows=args.max_windows,
            seed=args.seed,
            method=args.method,
            level=args.level,
        )
    except (ValueError, FileNotFoundError) as error:
        raise GenerationError(str(error)) from None
    path = args.out or model.checkpoint_dir / ATTRIBUTE_FILE
    print(vector.save(path))
    return 0


def run_danceability_map(args: argparse.Namespace) -> int:
    from jax_musicvae.danceability_map import MAP_FILE, fit_danceability_map
    from jax_musicvae.generate import GenerationError

    model = _load(args)
    try:
        fitted = fit_danceability_map(
            model, args.data, split=args.split, windows=args.windows, seed=args.seed
        )
    except (ValueError, FileNotFoundError) as error:
        raise GenerationError(str(error)) from None
    print(fitted.save(model.checkpoint_dir / MAP_FILE))
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from jax_musicvae.analysis import AnalysisSettings, analyze

    settings = AnalysisSettings(
        split=args.split,
        max_windows=args.max_windows,
        samples_per_value=args.samples_per_value,
        edit_windows=args.edit_windows,
        temperature=args.temperature,
        prior_samples=args.prior_samples,
        prior_temperature=args.prior_temperature,
        values=args.values,
        seed=args.seed,
        refine=args.refine,
        probe_windows=args.probe_windows,
        emphasis=args.emphasis,
        aim=args.aim,
        keep_source=args.keep_source,
    )
    paths = analyze(args.checkpoints, args.data, args.out, settings, batch_size=args.batch_size)
    print(paths["table"].read_text(), end="")
    for path in paths.values():
        print(path)
    return 0
