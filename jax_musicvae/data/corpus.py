"""The embedded corpus: folk tunes and Bach chorale melodies that install with music21.

Why: the project must train offline on real music with no download. music21
ships ~12.9k monophonic folk tunes in ABC (many with a dance-type field) and
~350 Bach chorales; this module converts them once to plain MIDI files in a
cache folder, so the dataset builder treats them like any other MIDI source.

Named corpora (SOURCE string ``corpus:<name>``; ``+`` joins names):

- ``folk``: Irish/Scottish ABC collections (O'Neill's 1850, Ryan's Mammoth,
  Aird's Airs, misc folk) and the Essen folk songs (European and Chinese).
- ``folk-small``: only the Irish/Scottish collections (~4.4k tunes, most of
  the dance labels); converts in about 55% of the time of ``folk``.
- ``essen``: only the Essen folk songs.
- ``bach``: soprano lines of the 350 unique Bach chorales (a low-danceability
  contrast set), labelled ``chorale``.
- ``folk+bach``, ``folk-small+bach``: unions.

Conversion (music21 10.5, 2 worker processes, format v2 with repeats
expanded): ``folk-small`` used 340 s of CPU time and ``essen`` 292 s, so
``folk`` takes about 5.3 min on an idle 2-core machine. On a shared machine
with a load average near 10, the wall times were 854 s and 663 s. That puts
``folk`` over the ~5 minute budget of a quick run. ``folk-small`` takes about
2.8 min when the machine is idle. A rerun only re-reads the ABC headers (about
1.4 s for ``folk+bach``). ABC files are split at ``X:`` headers and the tunes
are parsed one by one. That is ~10% slower than parsing a whole opus, but it
balances the workers, isolates a bad tune, and lets each tune be cached on its
own. 26 of 12,947 folk tunes fail: 20 have a meter whose denominator is not a
power of 2, and 6 have no notes.

MIDI files: one track with the melody (ties merged, chords kept, repeats and
first/second endings played out; a tune whose repeats music21 cannot expand is
written as notated), the score's time signatures and first metronome mark (120
bpm when none), and a pickup bar padded with rest so that bar lines fall on bar
lines. In 2/4 the padding is one bar longer, so the first full bar starts one
of the 16-step bar pairs that `midi_io` forms.

Labels: the ABC ``R:`` field (O'Neill's, Ryan's, Essen), otherwise a keyword in
the title (Aird's: "Reel", "Strathspey", "Quick Step" ...) or a slow tempo word
in O'Neill's notes ("Slow", "Tenderly" -> air), normalised to: reel, jig, slip
jig, hornpipe, clog, fling, strathspey, polka, slide, waltz, mazurka,
schottische, set dance, quickstep, march, rant, minuet, gavotte, dance (Essen
"Tanz"/"Reigen"), air, lament, song, ballad, lullaby, hymn, chorale; None when
unknown.

Terms: music21's code is BSD, but its corpus keeps each encoder's terms (see
``music21/corpus/license.txt``). The Essen folk songs are distributed for
non-commercial use only (permission of E. Dahlig-Turek and S. Schlien); the
ABC fiddle collections carry their transcribers' notes (Norbert Paap, Ray
Davies, Jack Campin ...); the Bach chorale encodings come with music21. Treat
the converted MIDI and anything trained on it as non-commercial research use.
Nothing from the corpus is committed to this repository; ``docs/corpus.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import pathlib
import re
import tempfile

import tqdm

from jax_musicvae.atomic import atomic_write
from jax_musicvae.data.types import SongInfo

logger = logging.getLogger(__name__)

FOLK_SMALL_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
ESSEN_COLLECTIONS = ("essenFolksong",)
_BASE_NAMES = ("folk", "folk-small", "essen", "bach")
CORPUS_NAMES = (*_BASE_NAMES, "folk+bach", "folk-small+bach")

# Bump when the conversion changes, so old caches are not reused.
_FORMAT_VERSION = "v2"  # v2: repeats expanded, 2/4 pickups padded to a pair
_DEFAULT_BPM = 120.0
_BATCH = 16

# Keyword -> normalised label, most specific first (checked in this order).
_LABEL_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("slip jig", "slip jig"),
    ("slipjig", "slip jig"),
    ("set dance", "set dance"),
    ("highland fling", "fling"),
    ("fling", "fling"),
    ("strathspey", "strathspey"),
    ("hornpipe", "hornpipe"),
    ("clog", "clog"),
    ("reel", "reel"),
    ("jig", "jig"),
    ("polka", "polka"),
    ("slide", "slide"),
    ("walzer", "waltz"),
    ("waltz", "waltz"),
    ("mazurka", "mazurka"),
    ("schottische", "schottische"),
    ("quick step", "quickstep"),
    ("quickstep", "quickstep"),
    ("walkaround", "dance"),
    ("tanz", "dance"),
    ("reigen", "dance"),
    ("march", "march"),
    ("marsch", "march"),
    ("rant", "rant"),
    ("minuet", "minuet"),
    ("menuett", "minuet"),
    ("gavotte", "gavotte"),
    ("lament", "lament"),
    ("klage", "lament"),
    ("slow air", "air"),
    ("air", "air"),
    ("wiegen", "lullaby"),
    ("lullaby", "lullaby"),
    ("geistlich", "hymn"),
    ("religi", "hymn"),
    ("ballade", "ballad"),
    ("ballad", "ballad"),
    ("romanze", "ballad"),
    ("lied", "song"),
    ("xiaodiao", "song"),
    ("shange", "song"),
    ("song", "song"),
)
# German compounds ("Tanzlied", "Wiegenlied", "religiöses") match anywhere in a word.
_SUBSTRING_KEYS = frozenset({"tanz", "reigen", "walzer", "wiegen", "geistlich", "religi", "lied"})
# Title keywords are only trusted for unambiguous dance/air names.
_TITLE_LABELS = frozenset(
    {
        "reel",
        "jig",
        "slip jig",
        "hornpipe",
        "strathspey",
        "polka",
        "waltz",
        "quickstep",
        "march",
        "rant",
        "minuet",
        "gavotte",
        "air",
        "lament",
        "fling",
        "mazurka",
        "schottische",
    }
)
_SLOW_WORDS = re.compile(r"\b(slow|tender\w*|plaintive|with expression)\b", re.IGNORECASE)


def normalize_label(text: str | None) -> str | None:
    """Map a free-text dance-type field (English or German) to a normalised label."""
    if not text:
        return None
    low = " ".join(re.sub(r"[\[\]?\-_]", " ", text.lower()).split())
    for key, label in _LABEL_KEYWORDS:
        if re.search(rf"(^|\W){re.escape(key)}s?(\W|$)", low) or (
            key in _SUBSTRING_KEYS and key in low
        ):
            return label
    return None


@dataclasses.dataclass(frozen=True)
class _Tune:
    """One tune to convert: where its text comes from and where its MIDI goes."""

    info: SongInfo
    kind: str  # "abc" (text holds the tune) or "chorale" (text holds a corpus path)
    text: str


def _abc_fields(chunk: str, field: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"(?m)^{field}:(.*)$", chunk)]


def _abc_label(chunk: str, collection: str) -> str | None:
    for rhythm in _abc_fields(chunk, "R"):
        label = normalize_label(rhythm)
        if label:
            return label
    for title in _abc_fields(chunk, "T"):
        label = normalize_label(title)
        if label in _TITLE_LABELS:
            return label
    if collection == "oneills1850" and _SLOW_WORDS.search(" ".join(_abc_fields(chunk, "N"))):
        return "air"
    return None


def _abc_tunes(collections: tuple[str, ...], out_root: pathlib.Path) -> list[_Tune]:
    """Split the ABC files of `collections` into tunes (cheap: text only, no parsing)."""
    from music21 import corpus

    tunes = []
    paths = sorted(corpus.getPaths(fileExtensions=("abc",)), key=str)
    for path in paths:
        collection = path.parent.name
        if collection not in collections:
            continue
        text = path.read_text(encoding="latin-1")
        parts = re.split(r"(?m)^(?=X:)", text)
        header = "\n".join(line for line in parts[0].splitlines() if re.match(r"^[A-Za-z]:", line))
        for k, chunk in enumerate(p for p in parts[1:] if p.strip()):
            song_id = f"{collection}/{path.stem}/{k:04d}"
            titles = _abc_fields(chunk, "T")
            info = SongInfo(
                song_id=song_id,
                path=str(out_root / f"{song_id}.mid"),
                title=titles[0] if titles else None,
                collection=collection,
                label=_abc_label(chunk, collection),
            )
            tunes.append(_Tune(info, "abc", f"{header}\n{chunk}" if header else chunk))
    return tunes


def _chorale_tunes(out_root: pathlib.Path) -> list[_Tune]:
    from music21 import corpus

    names = sorted(set(corpus.chorales.Iterator(returnType="filename")))
    tunes = []
    for name in names:
        song_id = name  # e.g. "bach/bwv269"
        info = SongInfo(
            song_id=song_id,
            path=str(out_root / f"{song_id}.mid"),
            artist="J. S. Bach",
            title=name.split("/")[-1],
            collection="bach",
            label="chorale",
        )
        tunes.append(_Tune(info, "chorale", name))
    return tunes


def _parse(tune: _Tune):
    from music21 import converter, corpus

    if tune.kind == "abc":
        return converter.parseData(tune.text, format="abc")
    return corpus.parse(tune.text).parts[0]  # the soprano line


def _melody_part(stream):
    from music21 import stream as m21stream

    return stream.parts[0] if isinstance(stream, m21stream.Score) and stream.parts else stream


def _play_order(part, song_id: str) -> list:
    """The part's measures in played order (repeats written out), or as written.

    Why: AABB tunes are written with repeat signs, so without expansion they
    are half as long as played, often too short for a 16-bar window. music21's
    expandRepeats deep-copies every note (~0.1-0.3 s a tune, more than the
    parse), so it runs on a stand-in part of empty measures that carry only the
    barlines, repeat expressions and volta brackets, numbered by position.
    Badly formed repeats fall back to the written order.
    """
    import copy

    from music21 import repeat, spanner
    from music21 import stream as m21stream

    measures = list(part.getElementsByClass(m21stream.Measure))
    if not measures:
        return [part]
    if part.recurse().getElementsByClass(repeat.RepeatMark).first() is None:
        return measures
    skeleton = m21stream.Part()
    stand_in = {}
    for i, m in enumerate(measures):
        s = m21stream.Measure(number=i)
        if m.leftBarline is not None:
            s.leftBarline = copy.deepcopy(m.leftBarline)
        if m.rightBarline is not None:
            s.rightBarline = copy.deepcopy(m.rightBarline)
        for mark in m.recurse().getElementsByClass(repeat.RepeatExpression):
            s.insert(0, copy.deepcopy(mark))
        skeleton.append(s)
        stand_in[id(m)] = s
    for bracket in part.spannerBundle.getByClass(spanner.RepeatBracket):
        spanned = [stand_in[id(m)] for m in bracket.getSpannedElements() if id(m) in stand_in]
        if spanned:
            skeleton.insert(0, spanner.RepeatBracket(spanned, number=bracket.number))
    try:
        expanded = skeleton.expandRepeats()
    except Exception as exc:  # noqa: BLE001 - badly formed repeats: keep the written tune
        logger.debug("%s: repeats not expanded (%s: %s)", song_id, type(exc).__name__, exc)
        return measures
    return [measures[m.number] for m in expanded.getElementsByClass(m21stream.Measure)]


def _melody_to_midi_bytes(measures: list) -> bytes:
    """Write the notes of measures played in this order as a one-track MIDI file, bar-aligned."""
    import pretty_midi
    from music21 import meter, tempo
    from music21 import stream as m21stream

    is_measure = isinstance(measures[0], m21stream.Measure)
    shift = float(measures[0].paddingLeft) if is_measure else 0.0
    starts, offset = [], 0.0
    for m in measures:
        starts.append(offset)
        offset += float(m.duration.quarterLength)
    flats = [m.flatten() for m in measures]
    sigs = [
        (start + float(ts.offset), ts)
        for start, flat in zip(starts, flats, strict=True)
        for ts in flat.getElementsByClass(meter.TimeSignature)
    ]
    if shift and sigs and sigs[0][1].barDuration.quarterLength == 2.0:
        # 2/4 bars are paired into 16-step bars from the first bar line: a whole
        # bar of rest before the pickup makes bar 1 start a pair, as played.
        shift += 2.0
    marks = [mk for flat in flats for mk in flat.getElementsByClass(tempo.MetronomeMark)]
    bpm = float(marks[0].getQuarterBPM() or _DEFAULT_BPM) if marks else _DEFAULT_BPM
    sec_per_quarter = 60.0 / bpm

    def seconds(offset: float) -> float:
        return (float(offset) + shift) * sec_per_quarter

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=73)  # flute: a neutral melody voice
    tied: dict[int, pretty_midi.Note] = {}  # pitch -> note a tie continues (stripTies is slow)
    for bar_start, flat in zip(starts, flats, strict=True):
        for n in flat.notes:
            start = seconds(bar_start + float(n.offset))
            end = start + float(n.quarterLength) * sec_per_quarter
            if end <= start:
                continue  # grace notes have no duration
            tie = n.tie.type if n.tie is not None else None
            for pitch in n.pitches:
                midi = int(pitch.midi)
                if tie in ("continue", "stop") and midi in tied:
                    tied[midi].end = end
                    held = tied[midi]
                else:
                    held = pretty_midi.Note(90, midi, start, end)
                    inst.notes.append(held)
                if tie in ("start", "continue"):
                    tied[midi] = held
                else:
                    tied.pop(midi, None)
    last_ratio = None
    for at_offset, ts in sigs:
        # A repeated bar restates its meter (mid-bar after a pickup); only real
        # changes are written, or they would cut the song into sections.
        if (ts.numerator, ts.denominator) == last_ratio:
            continue
        last_ratio = (ts.numerator, ts.denominator)
        # A meter at the very start belongs to bar 1 even when a pickup precedes it.
        at = 0.0 if at_offset == 0.0 else seconds(at_offset)
        pm.time_signature_changes.append(
            pretty_midi.TimeSignature(ts.numerator, ts.denominator, at)
        )
    if not inst.notes:
        raise ValueError("no notes")
    pm.instruments.append(inst)
    with tempfile.TemporaryFile() as fh:
        pm.write(fh)
        fh.seek(0)
        return fh.read()


def _convert_batch(tunes: list[_Tune]) -> list[str | None]:
    """Convert tunes to MIDI (worker process); an error is cached next to the file as `.err`."""
    import warnings

    warnings.filterwarnings("ignore")
    errors = []
    for tune in tunes:
        path = pathlib.Path(tune.info.path)
        try:
            order = _play_order(_melody_part(_parse(tune)), tune.info.song_id)
            atomic_write(path, _melody_to_midi_bytes(order))
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - any music21 failure skips the tune
            message = f"{type(exc).__name__}: {exc}"
            atomic_write(path.with_suffix(".err"), message.encode())
            errors.append(message)
    return errors


def _tunes_for(name: str, root: pathlib.Path) -> list[_Tune]:
    parts = name.split("+")
    unknown = [p for p in parts if p not in _BASE_NAMES]
    if unknown or not name:
        raise ValueError(
            f"unknown corpus {name!r}; valid names: {', '.join(CORPUS_NAMES)} "
            "(or any of folk, folk-small, essen, bach joined with '+')"
        )
    collections: set[str] = set()
    for part in parts:
        if part == "folk":
            collections |= {*FOLK_SMALL_COLLECTIONS, *ESSEN_COLLECTIONS}
        elif part == "folk-small":
            collections |= set(FOLK_SMALL_COLLECTIONS)
        elif part == "essen":
            collections |= set(ESSEN_COLLECTIONS)
    tunes = _abc_tunes(tuple(sorted(collections)), root) if collections else []
    if "bach" in parts:
        tunes += _chorale_tunes(root)
    return tunes


def cache_root(cache_dir: pathlib.Path) -> pathlib.Path:
    """Folder of the converted MIDI files: keyed by music21 version and conversion format."""
    import music21

    key = hashlib.sha1(f"{music21.__version__}/{_FORMAT_VERSION}".encode()).hexdigest()[:8]
    return pathlib.Path(cache_dir) / f"music21-{music21.__version__}-{key}"


def materialize(
    name: str, cache_dir: pathlib.Path, workers: int = 2, limit: int | None = None
) -> list[SongInfo]:
    """Convert corpus `name` to MIDI under `cache_dir` (once) and list its tunes.

    Tunes that music21 cannot parse or that have no notes are left out (their
    error is cached as a `.err` file so a rerun does not retry them). `limit`
    keeps the first tunes in corpus order (for tests and quick runs).
    """
    root = cache_root(cache_dir)
    tunes = _tunes_for(name, root)
    if limit is not None:
        tunes = tunes[:limit]

    def done(tune: _Tune) -> bool:
        path = pathlib.Path(tune.info.path)
        return path.exists() or path.with_suffix(".err").exists()

    todo = [t for t in tunes if not done(t)]
    if todo:
        logger.info("converting %d of %d tunes of corpus:%s to MIDI", len(todo), len(tunes), name)
        # Small batches keep both workers busy to the end (tune cost varies ~10x).
        batches = [todo[i : i + _BATCH] for i in range(0, len(todo), _BATCH)]
        failed = 0
        with tqdm.tqdm(total=len(todo), desc=f"corpus:{name}", unit="tune") as bar:
            if workers <= 1:
                results = map(_convert_batch, batches)
                for errs in results:
                    failed += sum(e is not None for e in errs)
                    bar.update(len(errs))
            else:
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(workers) as pool:
                    for errs in pool.imap_unordered(_convert_batch, batches):
                        failed += sum(e is not None for e in errs)
                        bar.update(len(errs))
        logger.info("corpus:%s: %d tunes failed to convert (see .err files)", name, failed)
    return [t.info for t in tunes if pathlib.Path(t.info.path).exists()]
