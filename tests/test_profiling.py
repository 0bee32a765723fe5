import pytest
import torch

from harness.profiling.flops import count_flops
from harness.profiling.latency import measure_interleaved
from harness.profiling.memory import count_params, peak_memory_mb
from methods._mock.model import TinyTransformer, analytic_flops

CFG = dict(image_size=32, patch=4, dim=32, depth=4, heads=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyTransformer(**CFG).eval()


@pytest.mark.parametrize("kw", [
    {},
    {"skip": frozenset({1, 2})},  # blocks skipped at run time
    {"keep_after": 0, "keep": 20},  # tokens pruned after block 0
    {"skip": frozenset({3}), "keep_after": 1, "keep": 9},
], ids=["full", "skip", "prune", "skip+prune"])
def test_flops_exact_against_analytic(model, kw):
    img = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8)
    counted, _ = count_flops(model, img, **kw)
    expected = analytic_flops(**CFG, **kw)
    assert counted / expected == pytest.approx(1.0, abs=1e-3)


def test_skipping_and_pruning_reduce_flops(model):
    img = torch.zeros((1, 32, 32, 3), dtype=torch.uint8)
    full = count_flops(model, img)[0]
    assert count_flops(model, img, skip=frozenset({0}))[0] < full
    assert count_flops(model, img, keep_after=0, keep=8)[0] < full


def test_latency_interleaved_stats():
    calls = {"a": lambda i: sum(range(100)), "b": lambda i: sum(range(2000))}
    out = measure_interleaved(calls, n_calls=100, warmup=5)
    for name in calls:
        assert out[name]["latency_ms"]["n"] == 100
        assert {"p50", "p90", "p99", "mean"} <= set(out[name]["cpu_ms"])
    assert out["_meta"]["threads"] == 1 and out["_meta"]["interleaved"] == ["a", "b"]
    assert len(out["_meta"]["load_average_before"]) == 3


def test_params_and_memory(model):
    assert count_params([model]) == sum(p.numel() for p in model.parameters())
    import numpy as np

    # a fresh 300 MB mapping: large enough that no previously freed memory can serve it
    mem = peak_memory_mb(lambda: np.ones(300 * 2**20 // 8).sum())
    assert mem["extra_mb"] is None or mem["extra_mb"] >= 200
