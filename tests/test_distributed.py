"""The kernel shared across processes: ``empirical_ntk(..., distributed=True)`` on 2 gloo processes on the CPU."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ntkmonitor
from ntkmonitor.kernel import split_rows

from . import models, reference
from .tolerances import KERNEL_RTOL, rel_err

CASES = [
    ("mlp", "trace", True),
    ("mlp", "full", False),
    ("transformer", "diagonal", True),
    ("cnn_bn_dropout", "trace", False),
]


def _worker(rank: int, size: int, store: str, out: str, fail_on: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        results = {}
        for kind, mode, symmetric in CASES:
            model, x1, x2, output_fn, params = models.make(kind)
            K = ntkmonitor.empirical_ntk(
                model,
                x1,
                None if symmetric else x2,
                mode=mode,
                params=params,
                output_fn=output_fn,
                dtype=torch.float64,
                distributed=True,
            )
            results[(kind, mode, symmetric)] = K
        if fail_on >= 0:  # one rank's model fails: every rank must raise, none may hang
            model = models.mlp() if rank != fail_on else torch.nn.Linear(7, 2)
            try:
                ntkmonitor.empirical_ntk(model, torch.randn(6, 6), distributed=True)
            except Exception as err:  # noqa: BLE001 - recorded for the parent
                results["failure"] = type(err).__name__
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, fail_on: int = -1) -> list[dict]:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    store, out = str(tmp_path / "store"), str(tmp_path / "kernel")
    mp.spawn(_worker, args=(2, store, out, fail_on), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]


def test_two_processes_return_the_single_process_kernel_on_every_rank(tmp_path):
    ranks = _spawn(tmp_path)
    for kind, mode, symmetric in CASES:
        model, x1, x2, output_fn, params = models.make(kind)
        expected = reference.kernel(model, x1, None if symmetric else x2, mode, params, output_fn)
        for results in ranks:
            K = results[(kind, mode, symmetric)]
            assert rel_err(K, expected) <= KERNEL_RTOL[torch.float64], (kind, mode, symmetric)
        assert torch.equal(ranks[0][(kind, mode, symmetric)], ranks[1][(kind, mode, symmetric)])
        if symmetric:
            K = ranks[0][(kind, mode, symmetric)]
            assert torch.equal(K, K.transpose(0, 1) if mode != "full" else K.permute(1, 0, 3, 2))


def test_a_failing_rank_makes_every_rank_raise_instead_of_hanging(tmp_path):
    ranks = _spawn(tmp_path, fail_on=1)
    assert ranks[1]["failure"] == "ModelCallError"  # its own error
    assert ranks[0]["failure"] == "NTKMonitorError"  # told that another rank failed


@pytest.mark.parametrize(("n", "parts"), [(10, 2), (7, 3), (1000, 4), (3, 5)])
def test_split_rows_covers_every_row_and_balances_the_triangle(n, parts):
    for symmetric in (False, True):
        ranges = split_rows(n, parts, symmetric=symmetric)
        assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        work = [sum(n - i if symmetric else 1 for i in range(a, b)) for a, b in ranges]
        if n >= 10 * parts:
            assert max(work) <= 1.05 * sum(work) / parts + n  # within one row of an even share


def test_distributed_outside_torch_distributed_computes_alone():
    model, x1, _, _, _ = models.make("mlp")
    assert torch.equal(ntkmonitor.empirical_ntk(model, x1, distributed=True), ntkmonitor.empirical_ntk(model, x1))
