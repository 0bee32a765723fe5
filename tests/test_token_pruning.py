"""Training-free token pruning / caching (methods/token_pruning) on a tiny random reference model: identity at
keep 1.0, protected tokens, VLA-Cache exactness on an unchanged frame, FLOPs, seeding, variants.
(Each registered method also runs through tests/test_conformance.py on mock-v1.)"""
import numpy as np
import pytest
import torch

from harness.interfaces import ConfigError, Task
from harness.plugins import make_method
from harness.profiling.flops import count_flops
from methods.reference.adapter import ReferencePolicy
from methods.reference.config import ReferenceConfig
from methods.reference.model import ModelConfig, ReferenceVLA, WordTokenizer
from methods.token_pruning.config import FastVConfig, RandomPruneConfig, SparseVLMConfig, VLACacheConfig
from methods.token_pruning.pruning import (FastVPolicy, RandomPrunePolicy, SparseVLMPolicy, VLACachePolicy,
                                           sparsevlm_schedule)

CFG = dict(cameras=["a", "b"], image_size=32, stem_channels=[8], grid=4, width=32, expert_width=32, heads=2,
           depth=8, chunk=4, flow_steps=3, proprio_dim=3, action_dim=2, max_text_len=8)
TASK = Task("t", "pick the red block", 0)


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(1)  # the machine is shared; tiny model
    torch.manual_seed(0)
    tok = WordTokenizer.train([TASK.instruction])
    model = ReferenceVLA(ModelConfig(**CFG, vocab_size=len(tok))).eval()
    return ReferencePolicy(model, tok, None, {"files": {}}, ReferenceConfig(n_execute=2))


def make_obs(seed: int = 0, moved: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    imgs = {c: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for c in ("a", "b")}
    if moved:  # change one 8x8 cell of camera a
        imgs["a"] = imgs["a"].copy()
        imgs["a"][:8, :8] = 255 - imgs["a"][:8, :8]
    return {"images": imgs, "proprio": rng.normal(size=3).astype(np.float32), "instruction": TASK.instruction}


def calls(policy, obs_list, seed=3):
    policy.reset(TASK, seed)
    return [policy.infer(o) for o in obs_list]


POLICIES = {
    "fastv": lambda t, r: FastVPolicy(t, FastVConfig(keep_ratio=r, prune_after=2), "fastv"),
    "sparsevlm": lambda t, r: SparseVLMPolicy(t, SparseVLMConfig(keep_ratio=r, prune_layers=[1, 3, 5]), "sparsevlm"),
    "random": lambda t, r: RandomPrunePolicy(t, RandomPruneConfig(keep_ratio=r, prune_after=2), "random"),
    "vla_cache": lambda t, r: VLACachePolicy(t, VLACacheConfig(keep_ratio=r, relevant_ratio=0.0), "vla_cache"),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_keep_ratio_one_equals_teacher_exactly(teacher, name):
    obs = [make_obs(0), make_obs(0), make_obs(1)]
    ref = calls(teacher, obs)
    got = calls(POLICIES[name](teacher, 1.0), obs)
    for a, b in zip(ref, got):
        assert np.array_equal(a.actions, b.actions)


@pytest.mark.parametrize("name", ["fastv", "sparsevlm", "random"])
@pytest.mark.parametrize("ratio", [0.5, 0.0])
def test_pruning_never_drops_language_or_proprio(teacher, name, ratio):
    pol = POLICIES[name](teacher, ratio)
    pol.reset(TASK, 0)
    m = teacher.model
    with torch.no_grad():
        images, text, proprio = teacher.inputs(make_obs(2))
        state = m.embed_prefix(images, text, proprio)
        out, info = pol.prefix(state, images)
    ids = set(out.ids[0].tolist())
    sp = out.spans
    assert set(range(*sp.language)) <= ids and set(range(*sp.proprio)) <= ids
    n_vis = sum(e - s for s, e in sp.vision.values())
    assert info["vision_tokens_kept"] < n_vis  # something was pruned
    assert out.n_tokens == (sp.language[1] - sp.language[0]) + 1 + info["vision_tokens_kept"]


def test_flops_fall_with_pruning(teacher):
    obs = make_obs(4)
    teacher.reset(TASK, 0)
    f_teacher, _ = count_flops(teacher.infer, obs)
    prev = f_teacher
    for r in (0.75, 0.5, 0.25):
        pol = POLICIES["fastv"](teacher, r)
        pol.reset(TASK, 0)
        f, _ = count_flops(pol.infer, obs)
        assert f < prev
        prev = f
    pol = POLICIES["random"](teacher, 0.5)
    pol.reset(TASK, 0)
    f_rand, _ = count_flops(pol.infer, obs)
    assert f_rand < f_teacher


def test_vla_cache_unchanged_frame_reuses_everything_and_matches(teacher):
    obs = make_obs(5)
    pol = VLACachePolicy(teacher, VLACacheConfig(keep_ratio=0.0, relevant_ratio=0.0), "vla_cache")
    pol.reset(TASK, 7)
    first_f, first = count_flops(pol.infer, obs)
    second_f, second = count_flops(pol.infer, obs)
    n_vis = 2 * 16
    assert first.extras["tokens_reused"] == 0
    assert second.extras["tokens_reused"] == n_vis and second.extras["vision_tokens_recomputed"] == 0
    assert second_f < first_f
    ref = calls(teacher, [obs, obs], seed=7)
    np.testing.assert_allclose(second.actions, ref[1].actions, atol=1e-5)
    stats = pol.episode_stats()
    assert stats["mean_tokens_reused"] == n_vis / 2


def test_vla_cache_recomputes_changed_and_relevant_patches(teacher):
    pol = VLACachePolicy(teacher, VLACacheConfig(keep_ratio=0.0, relevant_ratio=0.25), "vla_cache")
    pol.reset(TASK, 0)
    pol.infer(make_obs(6))
    relevant = pol.relevant.clone()
    chunk = pol.infer(make_obs(6, moved=1))
    # the changed 8x8 corner is cell 0 of camera a's 4x4 grid (8x8 pixels per cell): token 0
    assert int(relevant.sum()) == 8
    assert chunk.extras["static_tokens"] == 31
    assert not bool(pol.last_reuse[0])  # the changed patch is recomputed
    assert not bool((pol.last_reuse & relevant).any())  # task-relevant patches are recomputed
    assert chunk.extras["tokens_reused"] == 31 - int(relevant[1:32].sum())


def test_random_is_seeded_per_episode(teacher):
    obs = [make_obs(8)]
    a = calls(POLICIES["random"](teacher, 0.5), obs, seed=1)[0].actions
    b = calls(POLICIES["random"](teacher, 0.5), obs, seed=1)[0].actions
    assert np.array_equal(a, b)


def test_sparsevlm_schedule_budget():
    counts = sparsevlm_schedule(0.5, [2, 6, 10], 18, 64)
    assert counts == sorted(counts, reverse=True) and counts[0] < 64
    lengths = [4, 4, 7]
    mean = sum(c * n for c, n in zip(counts, lengths)) / sum(lengths) / 64
    assert abs(mean - 0.5) < 0.03
    assert sparsevlm_schedule(1.0, [2, 6, 10], 18, 64) == [64, 64, 64]


def test_variants_parse_keep_ratio():
    for name in ("fastv", "sparsevlm", "vla_cache", "random"):
        cfg = make_method(f"{name}@keep0.3").config("mock-v1")
        assert cfg.keep_ratio == 0.3
    with pytest.raises(ConfigError):
        make_method("fastv@keep1.5").config("mock-v1")
    with pytest.raises(Exception):
        make_method("fastv@keep")


def test_vla_cache_always_recomputes_keypoint_tokens():
    torch.manual_seed(0)
    tok = WordTokenizer.train([TASK.instruction])
    model = ReferenceVLA(ModelConfig(**CFG, vocab_size=len(tok), keypoints=8, kp_per_token=4)).eval()
    t = ReferencePolicy(model, tok, None, {"files": {}}, ReferenceConfig(n_execute=2))
    pol = VLACachePolicy(t, VLACacheConfig(keep_ratio=0.0, relevant_ratio=0.0), "vla_cache")
    pol.reset(TASK, 7)
    obs = make_obs(5)
    pol.infer(obs)
    second = pol.infer(obs)
    # 2 cameras x (16 patch tokens + 2 keypoint tokens): only the 32 patch tokens are reusable
    assert second.extras["tokens_reused"] == 32 and second.extras["vision_tokens_recomputed"] == 4
    np.testing.assert_allclose(second.actions, calls(t, [obs, obs], seed=7)[1].actions, atol=1e-5)
