"""The run directory: a self-contained, relocatable home for one trained detector.

Layout (all paths relative, so the folder can be moved or copied)::

    RUN/
      config.yaml          resolved config (data settings reused by later commands)
      vocab.json           fitted vocabularies
      model.safetensors    encoder weights
      model_card.json      data counts, model size, steps, validation metrics
      metrics.csv          training metrics log
      checkpoints/last.pt  resumable trainer state (weights-only loadable)
      detector/            embeddings, faiss index, detector state (no pickles)
      scores/latest.parquet  the most recent `score --run RUN` output
      labels/              label store, query log (active learning)
      head.safetensors     fine-tuned classification head (after `finetune`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import RunDirError


class RunDir:
    """Paths and checks for a run directory.

    Parameters
    ----------
    path : str or Path
        The run directory (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---- well-known locations
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def vocab_path(self) -> Path:
        return self.path / "vocab.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def card_path(self) -> Path:
        return self.path / "model_card.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def detector_dir(self) -> Path:
        return self.path / "detector"

    @property
    def scores_dir(self) -> Path:
        return self.path / "scores"

    @property
    def latest_scores_path(self) -> Path:
        return self.scores_dir / "latest.parquet"

    @property
    def labels_dir(self) -> Path:
        return self.path / "labels"

    @property
    def head_path(self) -> Path:
        return self.path / "head.safetensors"

    # ---- checks
    def require(self, *paths: Path, hint: str = "") -> None:
        """Raise :class:`RunDirError` if the folder or any of ``paths`` is missing."""
        if not self.path.is_dir():
            raise RunDirError(
                f"run directory {str(self.path)!r} does not exist; create one with "
                "`anomaly-ssl pretrain --data DATA --run RUN`"
            )
        missing = [str(p.relative_to(self.path)) for p in paths if not p.exists()]
        if missing:
            raise RunDirError(
                f"run directory {str(self.path)!r} is missing {', '.join(missing)}"
                + (f"; {hint}" if hint else "")
            )

    def read_config_dict(self) -> dict[str, Any]:
        """The run's saved config as a nested mapping."""
        self.require(self.config_path, hint="was `anomaly-ssl pretrain` run into it?")
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise RunDirError(f"{self.config_path}: not a config mapping")
        return raw

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
