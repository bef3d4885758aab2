"""Metrics to a JSONL log, TensorBoard event files and (opt-in) Weights & Biases.

Only the writer of process 0 is enabled on a pod. The JSONL log is the source of
truth for the final curves PNG; on resume it is cut back to the restored step so an
interrupted run leaves no duplicate or orphaned lines.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from jax_musicvae.atomic import atomic_write

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def truncate_log(path: Path, last_step: int) -> None:
    """Drop JSONL records after `last_step` (written by a run that was interrupted)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= last_step:
            kept.append(line)
    atomic_write(path, "".join(f"{line}\n" for line in kept))


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsWriter:
    """Writes scalars to every enabled backend; a no-op when `enabled` is False."""

    def __init__(
        self,
        workdir: Path,
        *,
        enabled: bool,
        resume_step: int | None = None,
        wandb: bool = False,
        wandb_project: str = "jax-musicvae",
        run_name: str = "run",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(workdir) / METRICS_FILE
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_log(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
        if wandb:
            if importlib.util.find_spec("wandb") is None:
                logger.warning("logging.wandb is set but wandb is not installed; skipping it")
            else:
                import wandb as wandb_module

                self._wandb = wandb_module.init(
                    project=wandb_project, name=run_name, config=config, resume="allow"
                )
        self._file = self.path.open("a")

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        record = {"step": step, "split": split, **{k: _json_safe(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(f"{split}/{name}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _json_safe(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def plot_curves(log_path: Path, out: Path) -> Path:
    """Loss and accuracy curves (train and validation) from the JSONL log as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)

    def series(split: str, key: str) -> tuple[list[int], list[float]]:
        points = [
            (r["step"], r[key])
            for r in records
            if r.get("split") == split and isinstance(r.get(key), float | int)
        ]
        return [p[0] for p in points], [p[1] for p in points]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, key, label in (
        ("train", "loss", "train loss"),
        ("eval", "recon", "validation reconstruction"),
    ):
        xs, ys = series(split, key)
        if xs:
            ax_loss.plot(xs, ys, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("nats per sequence")
    ax_loss.legend()
    for split, key, label in (
        ("train", "accuracy", "train teacher-forced"),
        ("eval", "accuracy", "validation teacher-forced"),
        ("eval", "greedy_accuracy", "validation greedy from mu"),
        ("eval", "shuffled_accuracy", "validation greedy, codes shuffled"),
    ):
        xs, ys = series(split, key)
        if xs:
            ax_acc.plot(xs, ys, label=label, marker="o" if split == "eval" else None)
    baseline = [r["baseline_accuracy"] for r in records if "baseline_accuracy" in r]
    if baseline:
        ax_acc.axhline(baseline[-1], color="grey", linestyle="--", label="most frequent token")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
