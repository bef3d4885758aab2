"""The playground's HTTP face: a FastAPI app with a JSON API and the page that uses it.

Every route is a thin shell over `Playground` (service.py), which calls the same
`TrainedModel` methods as the CLI. Errors come back as `{"error": "..."}` with a
4xx status (400 a request the model refuses, 404 an unknown route, 413 an upload
over 2 MB, 422 a parameter out of range), and the page shows that message. The
interactive OpenAPI pages are off (they load scripts from a CDN); the schema is
at /openapi.json.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from jax_musicvae.playground.service import (
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_UPLOAD_BYTES,
    TEMPO,
    TEMPO_RANGE,
    Playground,
    PlaygroundError,
    safe_name,
)

STATIC = resources.files("jax_musicvae.playground") / "static"

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="every random draw comes from it")]
Temperature = Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, description="0 = greedy")]
Danceability = Annotated[float, Field(ge=0.0, le=1.0)]
Tokens = Annotated[list[int], Field(min_length=1, description="the melody's tokens")]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decoding(StrictBody):
    """How tokens are decoded: greedily (temperature 0) unless asked, from `seed`."""

    temperature: Temperature = 0.0
    seed: Seed = 0


class SampleRequest(Decoding):
    count: int = Field(4, ge=1, le=MAX_SAMPLES)
    temperature: Temperature = 1.0
    danceability: Danceability | None = None


class MelodyRequest(StrictBody):
    tokens: Tokens
    seed: Seed = 0


class DecodeRequest(Decoding):
    z: list[list[float]] = Field(min_length=1)
    danceability: Danceability | None = None


class ReconstructRequest(Decoding):
    tokens: Tokens


class EditRequest(Decoding):
    tokens: Tokens
    danceability: Danceability
    strength: float = Field(1.0, ge=0.0, le=2.0)
    name: str = Field("melody", max_length=200)


class InterpolateRequest(Decoding):
    start: Tokens
    end: Tokens
    steps: int = Field(5, ge=2, le=MAX_STEPS)
    danceability: Danceability | None = None


class MidiRequest(StrictBody):
    tokens: Tokens
    tempo: float = Field(TEMPO, ge=TEMPO_RANGE[0], le=TEMPO_RANGE[1])
    name: str = Field("melody", max_length=200)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(error: RequestValidationError) -> str:
    """`field: problem` for each invalid part of a request, on one line."""
    parts = []
    for item in error.errors():
        where = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {declared} bytes; the limit is {limit // 2**20} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"upload over {limit // 2**20} MB")
    return bytes(body)


def create_app(playground: Playground) -> FastAPI:
    """The app over one loaded (and warmed) model."""
    app = FastAPI(
        title="jax-musicvae playground",
        docs_url=None,
        redoc_url=None,
        description="Sample, edit and interpolate melodies with a trained MusicVAE.",
    )
    play = playground

    @app.exception_handler(PlaygroundError)
    async def refused(_: Request, error: PlaygroundError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404 and error.detail == "Not Found":
            return _error(404, f"no such page or route: {request.method} {request.url.path}")
        return _error(error.status_code, str(error.detail))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/info")
    def info() -> dict:
        """The model, what it can do, and the limits of every request."""
        return play.info()

    @app.post("/api/sample")
    def sample(body: SampleRequest) -> dict:
        """New melodies from the prior (with the requested danceability if the model takes it)."""
        return play.sample(body.count, body.temperature, body.seed, body.danceability)

    @app.post("/api/encode")
    def encode(body: MelodyRequest) -> dict:
        """mu, sigma and z (eps from the seed) of every window of a melody."""
        return play.encode(play.tokens(body.tokens), body.seed)

    @app.post("/api/decode")
    def decode(body: DecodeRequest) -> dict:
        """Melodies from latent codes (one per code)."""
        return play.decode(body.z, body.temperature, body.seed, body.danceability)

    @app.post("/api/reconstruct")
    def reconstruct(body: ReconstructRequest) -> dict:
        """Encode a melody to mu and decode it again, with the token accuracy."""
        return play.reconstruct(play.tokens(body.tokens), body.temperature, body.seed)

    @app.post("/api/edit")
    def edit(body: EditRequest) -> dict:
        """The melody re-decoded with the requested danceability."""
        tokens = play.tokens(body.tokens)
        return play.edit(
            tokens, body.danceability, body.strength, body.temperature, body.seed, body.name
        )

    @app.post("/api/interpolate")
    def interpolate(body: InterpolateRequest) -> dict:
        """`steps` melodies on the slerp between the codes of start and end."""
        start, end = play.tokens(body.start, "start"), play.tokens(body.end, "end")
        return play.interpolate(
            start, end, body.steps, body.temperature, body.seed, body.danceability
        )

    @app.post("/api/analyse")
    def analyse(body: MelodyRequest) -> dict:
        """The melody's measured danceability and the rhythm features behind it."""
        return play.analyse(play.tokens(body.tokens))

    @app.post("/api/upload")
    async def upload(request: Request, name: str = Query("upload.mid", max_length=200)) -> dict:
        """A melody from a MIDI file sent as the request body (at most 2 MB)."""
        data = await _read_limited(request, MAX_UPLOAD_BYTES)
        return play.upload(data, name)

    @app.get("/api/held-out/{index}")
    def held_out(index: int) -> dict:
        """Window `index` of the dataset split given with --data."""
        return play.held_out_window(index)

    @app.post("/api/midi")
    def midi(body: MidiRequest) -> Response:
        """The melody as a MIDI file (4/4, one track)."""
        data = play.midi(play.tokens(body.tokens), body.tempo)
        filename = safe_name(body.name) + ".mid"
        return Response(
            data,
            media_type="audio/midi",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return app
