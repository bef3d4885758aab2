"""Danceability from Spotify's audio features: the original project's method, made safe to rerun.

Why this shape: Spotify closed GET /v1/audio-features to new and
development-mode apps on 27 Nov 2024 (HTTP 403), and development quotas answer
429 with a Retry-After that urllib3 would otherwise honour for as long as the
server asks. So every answer is cached locally (a rerun never asks twice), 429
waits are bounded and then the run stops cleanly with what it has, timeouts are
retried with a bounded backoff, and 403 explains the closure and points to the
offline sources (`table:FILE`, `labels`, `rhythm`).

Matching follows the original: search "artist:X track:Y", take the result
whose artist name is closest to ours (difflib ratio at least
`min_artist_ratio`), then fetch audio features in batches of up to 100 ids.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import pathlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import requests
import spotipy
from requests.adapters import HTTPAdapter
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyClientCredentials, SpotifyOauthError
from urllib3.util.retry import Retry

from jax_musicvae.atomic import atomic_file
from jax_musicvae.data.types import SongInfo, SongRhythm

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
CACHE_VERSION = 1

CLOSED_MESSAGE = (
    "Spotify answered 403 Forbidden. Spotify closed the audio-features endpoint to new "
    "and development-mode apps on 27 Nov 2024 (extended access needs an organisation "
    "with a launched service), so most credentials can no longer read danceability. "
    "Use an offline source instead: --danceability table:FILE (a CSV of "
    "path or artist,title -> danceability, e.g. from a public dump of Spotify audio "
    "features), --danceability labels (dance-type labels of the embedded folk corpus) "
    "or --danceability rhythm (an estimate from the MIDI itself)."
)
MISSING_CREDENTIALS_MESSAGE = (
    "The spotify danceability source needs SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET "
    "in the environment (a Spotify developer app's credentials). Without them, use "
    "--danceability table:FILE, labels or rhythm."
)


class SpotifyError(RuntimeError):
    """Spotify cannot be used at all (no credentials, rejected credentials, endpoint closed)."""


class _StopRequestsError(Exception):
    """Stop asking for now (rate limit or timeouts past their bounds); keep what we have."""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def song_key(artist: str, title: str) -> str:
    """Cache key of a search: case- and space-insensitive artist and title."""
    return f"{_norm(artist)}\t{_norm(title)}"


def make_client(requests_timeout: float = 10.0) -> spotipy.Spotify:
    """A spotipy client whose HTTP layer never retries or sleeps by itself.

    urllib3 would sleep for any Retry-After and retry 429/5xx on its own; a
    session with zero retries hands every status back so `SpotifyDanceability`
    applies its own bounds.
    """
    client_id = os.environ.get("SPOTIPY_CLIENT_ID")
    client_secret = os.environ.get("SPOTIPY_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise SpotifyError(MISSING_CREDENTIALS_MESSAGE)
    session = requests.Session()
    no_retry = Retry(total=0, read=False, raise_on_status=False, respect_retry_after_header=False)
    session.mount("http://", HTTPAdapter(max_retries=no_retry))
    session.mount("https://", HTTPAdapter(max_retries=no_retry))
    auth = SpotifyClientCredentials(
        client_id=client_id,
        client_secret=client_secret,
        requests_session=session,
        requests_timeout=requests_timeout,
        cache_handler=MemoryCacheHandler(),  # no `.cache` file in the working directory
    )
    return spotipy.Spotify(
        client_credentials_manager=auth,
        requests_session=session,
        requests_timeout=requests_timeout,
        retries=0,
        status_retries=0,
    )


class SpotifyDanceability:
    """The `spotify` danceability source (see the module docstring)."""

    def __init__(
        self,
        cache_path: pathlib.Path,
        client: spotipy.Spotify | None = None,
        *,
        min_artist_ratio: float = 0.6,
        search_limit: int = 10,
        max_retry_after_s: float = 60.0,
        max_total_wait_s: float = 300.0,
        timeout_retries: int = 3,
        backoff_s: float = 1.0,
        requests_timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cache_path = pathlib.Path(cache_path)
        self._client = client
        self.min_artist_ratio = min_artist_ratio
        self.search_limit = search_limit
        self.max_retry_after_s = max_retry_after_s
        self.max_total_wait_s = max_total_wait_s
        self.timeout_retries = timeout_retries
        self.backoff_s = backoff_s
        self.requests_timeout = requests_timeout
        self._sleep = sleep
        self._waited_s = 0.0
        self.cache = self._load_cache()

    # -- cache -------------------------------------------------------------------------------
    def _load_cache(self) -> dict[str, dict[str, Any]]:
        empty = {"version": CACHE_VERSION, "search": {}, "features": {}}
        if not self.cache_path.exists():
            return empty
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable Spotify cache %s: %s", self.cache_path, exc)
            return empty
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            logger.warning("ignoring Spotify cache %s of another version", self.cache_path)
            return empty
        return {**empty, **data}

    def save(self) -> None:
        """Write the cache atomically (a crash leaves the previous cache intact)."""
        with atomic_file(self.cache_path, "w") as fh:
            json.dump(self.cache, fh, indent=0, sort_keys=True)

    # -- HTTP with bounds --------------------------------------------------------------------
    @property
    def client(self) -> spotipy.Spotify:
        if self._client is None:
            self._client = make_client(self.requests_timeout)
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one request, applying the 403/429/timeout policy."""
        timeouts = 0
        while True:
            try:
                return fn()
            except SpotifyOauthError as exc:
                raise SpotifyError(
                    f"Spotify rejected the credentials in SPOTIPY_CLIENT_ID/SPOTIPY_CLIENT_SECRET "
                    f"({exc}). {MISSING_CREDENTIALS_MESSAGE}"
                ) from None
            except spotipy.SpotifyException as exc:
                if exc.http_status == 403:
                    raise SpotifyError(CLOSED_MESSAGE) from None
                if exc.http_status != 429:
                    raise
                wait = self._retry_after(exc)
                if wait > self.max_retry_after_s or self._waited_s + wait > self.max_total_wait_s:
                    raise _StopRequestsError(
                        f"rate limited on {what}: Retry-After {wait:g} s is past the bound "
                        f"({self.max_retry_after_s:g} s per answer, {self.max_total_wait_s:g} s "
                        f"in all, {self._waited_s:g} s waited)"
                    ) from None
                logger.info("Spotify rate limit on %s: waiting %g s", what, wait)
                self._waited_s += wait
                self._sleep(wait)
            except (requests.Timeout, requests.ConnectionError) as exc:
                timeouts += 1
                if timeouts > self.timeout_retries:
                    raise _StopRequestsError(
                        f"{what} failed {timeouts} times ({type(exc).__name__})"
                    ) from None
                delay = self.backoff_s * 2 ** (timeouts - 1)
                logger.info(
                    "Spotify %s: %s, retry %d in %g s", what, type(exc).__name__, timeouts, delay
                )
                self._sleep(delay)

    @staticmethod
    def _retry_after(exc: spotipy.SpotifyException) -> float:
        headers = exc.headers or {}
        try:
            return max(0.0, float(headers.get("Retry-After", 1)))
        except (TypeError, ValueError):
            return 1.0

    # -- the two steps -----------------------------------------------------------------------
    def _best_track(self, answer: Any, artist: str) -> str | None:
        """Id of the result whose artist is closest to `artist`, if close enough."""
        items = answer["tracks"]["items"]  # KeyError/TypeError: malformed, handled by caller
        best_id, best_ratio = None, self.min_artist_ratio
        for item in items:
            for candidate in item.get("artists", []):
                ratio = difflib.SequenceMatcher(
                    None, _norm(artist), _norm(candidate.get("name", ""))
                ).ratio()
                if ratio >= best_ratio and item.get("id"):
                    best_id, best_ratio = item["id"], ratio
        return best_id

    def _search(self, artist: str, title: str) -> None:
        key = song_key(artist, title)
        answer = self._call(
            f"search {artist!r} {title!r}",
            lambda: self.client.search(
                q=f"artist:{artist} track:{title}", type="track", limit=self.search_limit
            ),
        )
        try:
            self.cache["search"][key] = self._best_track(answer, artist)
        except (KeyError, TypeError, AttributeError):
            logger.warning("malformed Spotify search answer for %r %r; not cached", artist, title)

    def _features(self, ids: list[str]) -> None:
        def fetch() -> Any:
            with warnings.catch_warnings():  # spotipy flags the endpoint as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    return self.client.audio_features(ids)
                except (TypeError, KeyError):  # spotipy trips over a non-JSON answer
                    return None

        answer = self._call(f"audio-features for {len(ids)} tracks", fetch)
        if not isinstance(answer, list) or len(answer) != len(ids):
            logger.warning(
                "malformed Spotify audio-features answer for %d ids; not cached", len(ids)
            )
            return
        for track_id, features in zip(ids, answer, strict=True):
            value = features.get("danceability") if isinstance(features, dict) else None
            ok = isinstance(value, int | float) and 0.0 <= value <= 1.0
            self.cache["features"][track_id] = float(value) if ok else None

    def values(
        self, songs: list[SongInfo], rhythms: dict[str, SongRhythm] | None = None
    ) -> dict[str, float | None]:
        """Danceability per song_id; None when unmatched, unknown or not fetched this run."""
        del rhythms  # Spotify needs only artist and title
        keys = {s.song_id: song_key(s.artist, s.title) for s in songs if s.artist and s.title}
        by_key = {song_key(s.artist, s.title): s for s in songs if s.artist and s.title}
        try:
            todo = [k for k in dict.fromkeys(keys.values()) if k not in self.cache["search"]]
            for i, key in enumerate(todo, 1):
                song = by_key[key]
                self._search(song.artist, song.title)
                if i % 50 == 0:
                    self.save()
            ids = {self.cache["search"].get(k) for k in keys.values()} - {None}
            missing = sorted(i for i in ids if i not in self.cache["features"])
            for start in range(0, len(missing), BATCH_SIZE):
                self._features(missing[start : start + BATCH_SIZE])
        except _StopRequestsError as stop:
            logger.warning("stopping Spotify requests, keeping what was fetched: %s", stop)
        finally:
            self.save()
        out: dict[str, float | None] = {}
        for song in songs:
            track_id = self.cache["search"].get(keys.get(song.song_id, ""))
            out[song.song_id] = self.cache["features"].get(track_id) if track_id else None
        return out
