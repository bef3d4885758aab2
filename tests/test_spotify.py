"""The spotify source end to end: the real spotipy client against a local fake Spotify."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse

import pytest
from spotipy.oauth2 import SpotifyClientCredentials

from jax_musicvae.data.spotify import SpotifyDanceability, SpotifyError, make_client
from jax_musicvae.data.types import SongInfo

TRACKS = {  # (artist, title) -> (track id, danceability)
    ("Daft Punk", "Around the World"): ("id0000000000000000000A", 0.96),
    ("Beyonce", "Halo"): ("id0000000000000000000B", 0.51),
    ("Radiohead", "Creep"): ("id0000000000000000000C", 0.34),
}


class FakeSpotify(http.server.ThreadingHTTPServer):
    """Speaks the token, search and audio-features endpoints; `mode` scripts failures."""

    daemon_threads = True
    block_on_close = False  # do not wait for handlers still sleeping out a "timeout"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode: dict[str, list[str]] = {"search": [], "features": []}
        self.requests: list[str] = []


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeSpotify

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object | bytes, headers: dict[str, str] | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.server.requests.append("token")
        if self.headers.get("Authorization", "").startswith("Basic "):
            self._send(200, {"access_token": "tok", "token_type": "Bearer", "expires_in": 3600})
        else:
            self._send(400, {"error": "invalid_client"})

    def _scripted(self, endpoint: str) -> bool:
        """Apply the next scripted failure for `endpoint`; True when one was sent."""
        queue = self.server.mode[endpoint]
        if not queue:
            return False
        action = queue.pop(0)
        if action == "403":
            self._send(403, b"")
        elif action.startswith("429:"):
            self._send(429, {"error": {"status": 429}}, {"Retry-After": action[4:]})
        elif action == "malformed":
            self._send(200, b"{not json")
        elif action == "timeout":
            time.sleep(0.5)  # longer than the client's requests_timeout; then hang up
            self.close_connection = True
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.endswith("/search"):
            self.server.requests.append("search")
            if self._scripted("search"):
                return
            q = query["q"][0]
            items = []
            for (artist, title), (tid, _) in TRACKS.items():
                if f"track:{title}".lower() in q.lower():
                    # Spotify returns near misses too: the artist match must pick the right one.
                    items.append({"id": "idWRONGWRONGWRONGWRONG", "artists": [{"name": "Xyz"}]})
                    items.append({"id": tid, "artists": [{"name": artist.upper()}]})
            self._send(200, {"tracks": {"items": items}})
        elif "audio-features" in url.path:
            self.server.requests.append("features")
            if self._scripted("features"):
                return
            ids = query["ids"][0].split(",")
            by_id = {tid: d for tid, d in TRACKS.values()}
            feats = [{"id": i, "danceability": by_id[i]} if i in by_id else None for i in ids]
            self._send(200, {"audio_features": feats})
        else:
            self._send(404, {"error": {"status": 404}})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    srv = FakeSpotify()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setattr(SpotifyClientCredentials, "OAUTH_TOKEN_URL", f"{base}/api/token")
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "secret")
    srv.base = base
    yield srv
    srv.shutdown()
    srv.server_close()


def _source(server, tmp_path, **kw) -> tuple[SpotifyDanceability, list[float]]:
    client = make_client(requests_timeout=0.3)
    client.prefix = f"{server.base}/v1/"
    sleeps: list[float] = []
    src = SpotifyDanceability(
        tmp_path / "spotify.json", client, backoff_s=0.01, sleep=sleeps.append, **kw
    )
    return src, sleeps


SONGS = [
    SongInfo("a.mid", "a.mid", artist="daft  punk", title="Around The World"),
    SongInfo("b.mid", "b.mid", artist="Beyonce", title="Halo"),
    SongInfo("c.mid", "c.mid", artist="Radiohead", title="Creep"),
    SongInfo("d.mid", "d.mid", artist="Nobody", title="Unknown Song"),
    SongInfo("e.mid", "e.mid"),  # no artist/title: never asked
]


def test_values_and_cache_means_no_second_request(server, tmp_path):
    src, _ = _source(server, tmp_path)
    values = src.values(SONGS, {})
    assert values == {"a.mid": 0.96, "b.mid": 0.51, "c.mid": 0.34, "d.mid": None, "e.mid": None}
    assert server.requests.count("search") == 4
    assert server.requests.count("features") == 1  # one batch for three ids
    n = len(server.requests)
    again, _ = _source(server, tmp_path)
    assert again.values(SONGS, {}) == values
    assert len(server.requests) == n  # all answers came from the cache


def test_batches_of_at_most_100(server, tmp_path, monkeypatch):
    src, _ = _source(server, tmp_path)
    src.cache["search"] = {f"a{i}\tt": f"id{i:020d}" for i in range(250)}
    songs = [SongInfo(f"s{i}", f"s{i}", artist=f"a{i}", title="t") for i in range(250)]
    calls: list[int] = []
    real = src.client.audio_features
    monkeypatch.setattr(
        src.client, "audio_features", lambda ids: calls.append(len(ids)) or real(ids)
    )
    values = src.values(songs, {})
    assert calls == [100, 100, 50]
    assert set(values.values()) == {None}  # unknown ids come back as None, cached as None
    assert len(src.cache["features"]) == 250


def test_403_explains_the_closure(server, tmp_path):
    server.mode["features"] = ["403"]
    src, _ = _source(server, tmp_path)
    with pytest.raises(SpotifyError, match=r"27 Nov 2024.*table:FILE.*labels.*rhythm"):
        src.values(SONGS[:1], {})
    # The search answers were kept for the next run.
    assert json.loads((tmp_path / "spotify.json").read_text())["search"] == {
        "daft punk\taround the world": "id0000000000000000000A"
    }


def test_429_waits_per_retry_after_then_succeeds(server, tmp_path):
    server.mode["search"] = ["429:3", "429:2"]
    src, sleeps = _source(server, tmp_path)
    assert src.values(SONGS[:1], {}) == {"a.mid": 0.96}
    assert sleeps == [3.0, 2.0]


def test_429_past_the_bound_stops_and_keeps_what_it_has(server, tmp_path):
    server.mode["search"] = ["429:5"]
    server.mode["features"] = ["429:3600"]
    src, sleeps = _source(server, tmp_path, max_retry_after_s=10)
    values = src.values(SONGS[:2], {})
    assert values == {"a.mid": None, "b.mid": None}
    assert sleeps == [5.0]  # the 3600 s wait was refused
    cache = json.loads((tmp_path / "spotify.json").read_text())
    assert len(cache["search"]) == 2 and cache["features"] == {}
    # The next run only asks for what is missing.
    server.requests.clear()
    again, _ = _source(server, tmp_path)
    assert again.values(SONGS[:2], {}) == {"a.mid": 0.96, "b.mid": 0.51}
    assert server.requests.count("search") == 0


def test_total_wait_is_bounded(server, tmp_path):
    server.mode["search"] = ["429:4"] * 10
    src, sleeps = _source(server, tmp_path, max_retry_after_s=5, max_total_wait_s=10)
    assert src.values(SONGS[:1], {}) == {"a.mid": None}
    assert sleeps == [4.0, 4.0]


def test_malformed_answers_are_not_cached(server, tmp_path):
    server.mode["search"] = ["malformed"]
    server.mode["features"] = ["malformed"]
    src, _ = _source(server, tmp_path)
    assert src.values(SONGS[:2], {}) == {"a.mid": None, "b.mid": None}
    cache = json.loads((tmp_path / "spotify.json").read_text())
    assert list(cache["search"]) == ["beyonce\thalo"] and cache["features"] == {}


def test_timeouts_are_retried_with_backoff(server, tmp_path):
    server.mode["search"] = ["timeout", "timeout"]
    src, sleeps = _source(server, tmp_path)
    assert src.values(SONGS[:1], {}) == {"a.mid": 0.96}
    assert sleeps == [0.01, 0.02]


def test_timeouts_past_the_bound_stop_cleanly(server, tmp_path):
    server.mode["search"] = ["timeout"] * 3
    src, sleeps = _source(server, tmp_path, timeout_retries=2)
    assert src.values(SONGS[:1], {}) == {"a.mid": None}
    assert sleeps == [0.01, 0.02]


def test_missing_credentials(monkeypatch):
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    with pytest.raises(SpotifyError, match="SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET"):
        make_client()
