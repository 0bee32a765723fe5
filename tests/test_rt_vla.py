"""RT-VLA and LatentVLA pieces that need no trained driving teacher (conformance covers distil + run on mock)."""
import numpy as np
import pytest
import torch

from harness.interfaces import Task
from harness.profiling.flops import count_flops
from methods.latent_vla.lam import LAMConfig, pair_index, train_lam, unlabelled_frames
from methods.rt_vla.adapter import RTPolicy
from methods.rt_vla.config import RTVLAConfig
from methods.rt_vla.explain import find_moments
from methods.rt_vla.student import EOS, CompactStudent, StudentConfig, token_metrics

VOCAB = ["<pad>", "<unk>", "<bos>", "<eos>", "turn", "left", "right", "slowing", "down", "car", "ahead"]


def _policy(generate: bool) -> RTPolicy:
    torch.manual_seed(0)
    cfg = StudentConfig(cameras=["topdown"], image_size=32, channels=[8, 16], grid=2, width=32, fuse_layers=1,
                        proprio_dim=6, action_dim=16, chunk=8, vocab_size=len(VOCAB), lang_head=True,
                        lang_vocab_size=len(VOCAB), lang_max_len=6)
    manifest = {"tokenizer": {"vocab": VOCAB}, "lang_tokenizer": {"vocab": VOCAB}}
    pol = RTPolicy(CompactStudent(cfg), manifest, RTVLAConfig(generate_text=generate), folder=None)
    pol.reset(Task("t", "turn left"), 0)
    return pol


OBS = {"images": {"topdown": np.full((32, 32, 3), 128, np.uint8)}, "proprio": np.zeros(6, np.float32),
       "instruction": "turn left"}


def test_modes_same_action_shape_and_vision_only_skips_decoder():
    vo, vl = _policy(False), _policy(True)
    calls = []
    for blk in vo.student.lang_blocks:
        blk.register_forward_hook(lambda *a: calls.append(1))
    f_vo, out_vo = count_flops(vo.infer, OBS)
    f_vl, out_vl = count_flops(vl.infer, OBS)
    assert out_vo.actions.shape == out_vl.actions.shape == (8, 16)
    np.testing.assert_allclose(out_vo.actions, out_vl.actions, rtol=1e-5, atol=1e-6)  # same weights, same actions
    assert not calls, "vision-only mode ran the language decoder"
    assert "text" not in out_vo.extras and isinstance(out_vl.extras["text"], str)
    assert f_vl > f_vo  # the decoder's FLOPs appear only in vision+language mode


def test_token_metrics_hand_cases():
    m = token_metrics([[4, 5, EOS]], [[4, 5, EOS]])
    assert m["token_accuracy"] == 1 and m["exact_match"] == 1 and m["rouge_l_f1"] == 1
    m = token_metrics([[4, 6, EOS]], [[4, 5, EOS]])
    assert m["token_accuracy"] == pytest.approx(2 / 3) and m["exact_match"] == 0
    assert m["rouge_l_f1"] == pytest.approx(0.5)


def test_find_moments():
    trace = [{"step": i, "accel": a, "ttc_ok": t, "speed": 10.0} for i, (a, t) in enumerate(
        [(0, True), (-4, True), (-4.5, True), (0, False), (0, False), (0, True), (-5, True)], 1)]
    m = find_moments(trace, "vehicle_collision", hard_brake=3.0, max_moments=10)
    kinds = [(x["step"], x["kind"]) for x in m]
    assert (2, "hard_braking") in kinds and (3, "hard_braking") not in kinds  # a run counts once
    assert (4, "low_ttc") in kinds and (7, "hard_braking") in kinds
    assert kinds[-1] == (7, "infraction:vehicle_collision")
    assert len(find_moments(trace, "success", 3.0, max_moments=1)) == 1


class _Guarded:
    """An episode whose labelled fields explode when read: the LAM must only touch images."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.images = {"topdown": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)}

    def __getattr__(self, name):
        raise AssertionError(f"the latent action model read {name!r}")


def test_lam_reads_only_images_and_reports_codebook_usage():
    rng = np.random.default_rng(0)
    eps = [_Guarded(12, rng) for _ in range(3)]
    frames, owner = unlabelled_frames(eps, "topdown")
    assert frames.shape == (36, 64, 64, 3) and len(pair_index(owner, 4)) == 3 * 8
    model, report = train_lam(frames, owner, LAMConfig(steps=6, batch=8, codes=8), progress=False, log=lambda s: None)
    assert sum(report["code_usage"]) == report["pairs"] == 24
    assert set(report["dead_codes"]) == {i for i, c in enumerate(report["code_usage"]) if c == 0}
    assert 1.0 <= report["perplexity"] <= 8.0


def test_spread_takes_frames_from_every_episode():
    from methods.rt_vla.distill import spread

    idx = np.arange(1000)
    got = spread(idx, 10)
    assert len(got) == 10 and got[0] == 0 and got[-1] == 999 and np.all(np.diff(got) >= 100)
    np.testing.assert_array_equal(spread(idx[:5], 10), idx[:5])
