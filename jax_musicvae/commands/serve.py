"""`musicvae serve`: the playground (a local web page and JSON API) over one checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web page to sample, edit, interpolate and hear melodies",
        description="Loads the model once, compiles its functions, then serves the page and "
        "its JSON API (README: 'The playground'). Binds to 127.0.0.1 unless --host says "
        "otherwise.",
    )
    p.add_argument("--checkpoint", required=True, help="workdir, checkpoints/ or step folder")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    p.add_argument("--best", action="store_true", help="the step with the best val. ELBO")
    p.add_argument("--attribute-vector", type=Path, default=None)
    p.add_argument("--data", type=Path, default=None, help="dataset to pick held-out melodies")
    p.add_argument("--split", default="validation", help="its split (default validation)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run_serve, one_device_per_core=True)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from jax_musicvae.checkpoints import CheckpointError
    from jax_musicvae.generate import GenerationError, TrainedModel
    from jax_musicvae.playground.app import create_app
    from jax_musicvae.playground.service import Playground, PlaygroundError

    try:
        model = TrainedModel.load(
            args.checkpoint, step=args.step, best=args.best, attribute_vector=args.attribute_vector
        )
        playground = Playground(
            model,
            attribute_vector=str(args.attribute_vector) if args.attribute_vector else None,
            data=args.data,
            split=args.split,
        )
    except (GenerationError, PlaygroundError, CheckpointError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    playground.warm_up()
    logger.info("ready: open http://%s:%d in a browser (Ctrl-C stops)", args.host, args.port)
    uvicorn.run(create_app(playground), host=args.host, port=args.port, log_level="warning")
    return 0
