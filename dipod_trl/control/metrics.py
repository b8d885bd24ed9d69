"""Metrics: one JSON object per update in `output_dir/metrics.jsonl`; tensorboard / wandb when `report_to` asks."""

from __future__ import annotations

import json
import os
from dataclasses import asdict


class MetricsLogger:
    """Writes `metrics.jsonl`. A run resumed after update N (`resume_after_update=N`) keeps the rows of updates 0..N
    and appends its own: rows an interrupted run logged after its checkpoint are dropped, so no update appears twice."""

    def __init__(self, config, resume_after_update: int | None = None):
        os.makedirs(config.output_dir, exist_ok=True)
        self.path = os.path.join(config.output_dir, "metrics.jsonl")
        resume = resume_after_update is not None
        if resume and os.path.exists(self.path):
            with open(self.path) as f:
                lines = [line for line in f if line.strip()]
            if lines and not lines[-1].endswith("\n"):
                lines.pop()  # a row cut short by the crash that interrupted the run
            kept = [line for line in lines if json.loads(line).get("update", 0) <= resume_after_update]
            with open(self.path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(self.path + ".tmp", self.path)
        self.file = open(self.path, "a" if resume else "w")
        self.tensorboard = self.wandb = None
        run_name = config.run_name or f"{config.env_id}__{config.loss_type}__seed{config.seed}"
        if "tensorboard" in config.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "report_to includes 'tensorboard' but tensorboard is not installed: `pip install tensorboard`."
                ) from error
            self.tensorboard = SummaryWriter(os.path.join(config.output_dir, "runs", run_name))
        if "wandb" in config.report_to:
            try:
                import wandb
            except ImportError as error:
                raise ImportError(
                    "report_to includes 'wandb' but wandb is not installed: `pip install wandb`."
                ) from error
            self.wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "dipod-trl-control"),
                name=run_name,
                config=asdict(config),
                dir=config.output_dir,
                resume="allow" if resume else None,
            )

    def log(self, metrics: dict, step: int) -> None:
        self.file.write(json.dumps(metrics) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(output_dir: str) -> list[dict]:
    """The records of `output_dir/metrics.jsonl`, in order."""
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
