"""Distributed data-parallel pretraining: 2 CPU processes (gloo) started by torchrun."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from anomaly_ssl.distributed import DistInfo, shard

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, {tests!r})
    from test_model import GrammarVocab, grammar_sequences

    from anomaly_ssl.config import Config, ModelConfig, WindowConfig
    from anomaly_ssl.distributed import cleanup
    from anomaly_ssl.pretrain import pretrain_encoded

    out = Path({out!r})
    cfg = Config()
    cfg.model = ModelConfig(size="tiny", dropout=0.1)
    cfg.window = WindowConfig(max_len=16)
    cfg.device = "cpu"
    cfg.train.batch_size = 8
    cfg.train.max_epochs = 2
    cfg.train.eval_every = 4
    cfg.train.checkpoint_every = 4
    cfg.train.log_every = 2
    enc = grammar_sequences(n=90, seed=2)
    result = pretrain_encoded(enc, GrammarVocab(enc), cfg, out / "run")
    rank = result.dist.rank
    torch.save(result.model.state_dict(), out / f"rank{{rank}}.pt")
    (out / f"rank{{rank}}.json").write_text(repr(result.train.state.best_metric))
    cleanup()
    """
)


def test_shard_gives_every_rank_the_same_number_of_batches():
    items = list(range(11))
    parts = [shard(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert shard(items, DistInfo()) == items


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path)))
    env = os.environ | {
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "ANOMALY_SSL_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # both ranks end with the same weights (DDP keeps them in sync)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # ... and the same (rank-reduced) validation metric
    assert (tmp_path / "rank0.json").read_text() == (tmp_path / "rank1.json").read_text()
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["best_model"][k], w0[k]) for k in w0)
    card = json.loads((run / "model_card.json").read_text())
    assert card["device"]["world_size"] == 2
    # batches of 8 windows dealt to 2 ranks (an odd last batch is dropped), 2 epochs
    per_rank = math.ceil(card["data"]["n_train_windows"] / 8) // 2
    assert card["training"]["steps"] == 2 * per_rank == ckpt["state"]["step"]
    with open(run / "metrics.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == sorted(set(steps)), "metrics written by more than one rank"
    assert (run / "model.safetensors").is_file() and (run / "vocab.json").is_file()
