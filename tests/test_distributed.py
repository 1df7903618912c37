"""Data-parallel training: the sharded sampler, and a 2-process gloo run (torchrun) that matches
a 1-process run with twice the per-process batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from captioning.checkpoint import load_checkpoint
from captioning.data.loader import EpochSampler
from captioning.distributed import DistContext, gather_dicts, init_distributed
from captioning.errors import CaptioningError
from captioning.training.run_log import read_metrics_csv


class Items(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def batches(sampler: EpochSampler, size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_rank_batches_together_are_the_single_process_batch():
    data, b = Items(40), 4
    single = EpochSampler(data, seed=5)
    ranks = [EpochSampler(data, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in (1, 2):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        together = [sorted(x + y) for x, y in zip(*(batches(s, b) for s in ranks), strict=True)]
        assert together == [sorted(x) for x in batches(single, 2 * b)]
    single.set_epoch(1)
    first = list(single)
    single.set_epoch(2)
    assert list(single) != first and sorted(first) == list(range(40))  # a new order per epoch
    single.set_epoch(2, start=16)  # resuming after 2 batches of 8 gives the remaining batches
    rest = batches(single, 8)
    single.set_epoch(2)
    assert rest == batches(single, 8)[2:] and len(single) == 40


def test_single_process_helpers_and_the_torchrun_check(monkeypatch):
    assert DistContext().is_main and gather_dicts({1: "a"}) == {1: "a"}
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(CaptioningError, match="needs torchrun"):
        init_distributed("cpu")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_twice_the_batch(shapes_root, tmp_path):
    from helpers import SMALL, TINY, fit, small_cfg, torchrun_train

    common = [
        "trainer.epochs=2",
        "encoder.trainable=false",
        "data.feature_cache=false",
        "decoder.dropout=0",
    ]
    fit(small_cfg(shapes_root, *common, "trainer.batch_size=8"), run_dir=tmp_path / "one")
    ddp = tmp_path / "ddp"
    out = torchrun_train(
        f"data.root={shapes_root}",
        *TINY,
        *SMALL,
        *common,
        "trainer.batch_size=4",
        "trainer.test_after_training=true",
        f"hydra.run.dir={ddp}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = (
        read_metrics_csv(tmp_path / "one" / "metrics.csv"),
        read_metrics_csv(ddp / "metrics.csv"),
    )
    assert [r["step"] for r in two] == [r["step"] for r in one] == [3, 6]
    for a, b in zip(one, two, strict=True):  # the same loss curve
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_num_images"] == 20  # sharded decoding covered every image once
    w1, w2 = (
        load_checkpoint(run / "checkpoints" / "last.pt")["model"] for run in (tmp_path / "one", ddp)
    )
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5)
    assert out.stdout.count("run directory:") == 1  # rank 0 alone reports
    assert "test split (20 images" in out.stdout  # sharded test decoding, merged on rank 0
