"""ActDistill (methods/actdistill): gated forward == anatomy skip, binary gates that really skip computation
(FLOP count), auxiliary graph heads absent from the deployed student and its artifact, stage-1 cache reuse,
and the debug config end to end on mock-v1. Fast: a tiny random teacher except for the last test."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.interfaces import DataSource
from harness.plugins import make_method, make_suite
from harness.profiling.flops import count_flops
from methods.actdistill import train as T
from methods.actdistill.adapter import ActDistillPolicy
from methods.actdistill.student import Encapsulation, Router, expert_tokens, gated_pass, hard_gates, router_balance_loss
from methods.reference.adapter import ReferencePolicy
from methods.reference.config import ReferenceConfig
from methods.reference.model import ModelConfig, ReferenceVLA, WordTokenizer

DEPTH = 6


def tiny_teacher() -> ReferencePolicy:
    torch.manual_seed(0)
    cfg = ModelConfig(cameras=["top"], image_size=32, stem_channels=[8], grid=4, proprio_dim=2, action_dim=2,
                      chunk=4, width=32, heads=2, depth=DEPTH, expert_width=32, flow_steps=2, vocab_size=10)
    model = ReferenceVLA(cfg).eval()
    tok = WordTokenizer(["<pad>", "<unk>", "<bos>", "<eos>", "blue", "green", "reach", "red", "target", "the"])
    manifest = {"files": {"model.safetensors": "tiny-random-teacher"}}
    return ReferencePolicy(model, tok, None, manifest, ReferenceConfig(n_execute=2))


def debug_cfg(**kw):
    return make_method("actdistill").config("mock-v1", debug=True, overrides=kw)


def obs_of(seed: int = 0) -> dict:
    suite = make_suite("mock-v1")
    ep = suite.episodes("smoke")[seed % 4]
    env = suite.make_env(ep.task)
    obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
    return obs, ep


def test_gated_pass_equals_anatomy_skip():
    teacher = tiny_teacher()
    m = teacher.model
    obs, _ = obs_of()
    torch.manual_seed(1)
    x_t, t = torch.randn(1, m.cfg.chunk, m.cfg.action_dim), torch.tensor([0.7])
    for skip in (set(), {1, 4}, {0, 2, 3, 5}):
        gates = torch.tensor([[0.0 if i in skip else 1.0 for i in range(DEPTH)]])
        with torch.no_grad():
            st = m.embed_prefix(*teacher.inputs(obs))
            _, hs, nodes = gated_pass(m, st, gates, [expert_tokens(m, x_t, t)], collect=0)
            v_gated = m.action_out(m.expert_norm(hs[0]))
            ref = m.forward_prefix(m.embed_prefix(*teacher.inputs(obs)), skip=skip)
            v_ref = m.velocity(ref, x_t, t, skip=skip)
        torch.testing.assert_close(v_gated, v_ref, rtol=1e-5, atol=1e-5)
        assert len(nodes) == DEPTH and nodes[0].shape[1] == st.n_tokens + m.cfg.chunk


def _policy(teacher: ReferencePolicy, keep: list[bool], cfg=None) -> ActDistillPolicy:
    cfg = cfg or debug_cfg()
    router = Router(teacher.model.cfg.width, DEPTH, cfg.router_dim)
    router.init_bias(torch.tensor(keep), 4.0)
    helper = ReferencePolicy(teacher.model, teacher.tok, None, {}, teacher.cfg)
    return ActDistillPolicy(teacher.model, router.eval(), helper, cfg, {})


def test_gates_binary_and_closed_layers_not_computed():
    teacher = tiny_teacher()
    obs, ep = obs_of()
    keep = [True, False, True, False, False, True]
    pol = _policy(teacher, keep)
    full = _policy(teacher, [True] * DEPTH)
    pol.reset(ep.task, ep.seed)
    full.reset(ep.task, ep.seed)
    with torch.no_grad():
        st = teacher.model.embed_prefix(*teacher.inputs(obs))
        g = hard_gates(pol.router(st), 0.5)
    assert g.dtype == torch.bool and g[0].tolist() == keep  # binary gates, threshold 0.5
    f_pol, chunk = count_flops(pol.infer, obs)
    f_full, _ = count_flops(full.infer, obs)
    assert chunk.extras["blocks_executed"] == [i for i, k in enumerate(keep) if k]
    # the student's FLOPs are the anatomy's with the closed layers skipped, plus the router: nothing else runs
    m = teacher.model
    skip = {i for i, k in enumerate(keep) if not k}

    def anatomy(skip_set):
        teacher.reset(ep.task, ep.seed)
        s = m.forward_prefix(m.embed_prefix(*teacher.inputs(obs)), skip=skip_set)
        return m.sample_actions(s, teacher.noise(), skip=skip_set, steps=pol.flow_steps)

    f_anat, _ = count_flops(anatomy, skip)
    f_anat_full, _ = count_flops(anatomy, set())
    f_router, _ = count_flops(lambda: pol.router(m.embed_prefix(*teacher.inputs(obs))))
    f_embed, _ = count_flops(lambda: m.embed_prefix(*teacher.inputs(obs)))
    router_only = f_router - f_embed
    assert router_only > 0
    assert f_pol == f_anat + router_only
    assert f_full == f_anat_full + router_only
    per_layer = (f_anat_full - f_anat) / len(skip)
    assert per_layer > 0 and f_full - f_pol == pytest.approx(per_layer * len(skip))
    stats = pol.episode_stats()
    assert stats["block_usage"] == [1.0 if k else 0.0 for k in keep] and stats["blocks_executed_mean"] == sum(keep)


def test_artifact_and_policy_have_no_auxiliary_heads(tmp_path):
    teacher = tiny_teacher()
    cfg = debug_cfg()
    m = teacher.model
    heads = Encapsulation(DEPTH, m.cfg.width, m.cfg.action_dim, cfg)
    tr = T.Trainables(m, Router(m.cfg.width, DEPTH, cfg.router_dim), heads)
    assert any(k.startswith("heads.") for k in tr.state_dict())  # training holds them ...
    T.export(tr.model, tr.router, teacher, cfg, tmp_path, {})
    keys = set(load_file(str(tmp_path / T.ARTIFACT)))
    expected = {f"model.{k}" for k in m.state_dict()} | {f"router.{k}" for k in tr.router.state_dict()}
    assert keys == expected  # ... the saved inference artifact does not
    assert not any(k.startswith(("heads.", "probes.")) or ".gat." in k or "probes" in k for k in keys)
    model, router, manifest = T.load_artifact(tmp_path)
    pol = ActDistillPolicy(model, router, ReferencePolicy(model, teacher.tok, None, manifest, teacher.cfg), cfg,
                           manifest)
    for mod in pol.modules():
        assert not any(isinstance(x, Encapsulation) for x in mod.modules())
    n_heads = sum(p.numel() for p in heads.parameters())
    assert sum(p.numel() for mod in pol.modules() for p in mod.parameters()) == \
        sum(p.numel() for p in m.parameters()) + sum(p.numel() for p in router.parameters())
    assert n_heads > 0


class _Data(DataSource):
    pass


def test_stage1_cache_reused_and_artifact_cached(tmp_path, monkeypatch):
    teacher = tiny_teacher()
    cfg = debug_cfg(max_frames=24, stage1_steps=2, steps=2, importance_frames=8)
    data = _Data(make_suite("mock-v1"), tmp_path)
    eps, _ = T.get_episodes(data, cfg)
    frames = T.Frames(eps, teacher, cfg.max_frames, cfg.seed)
    first = T.stage1(teacher, frames, cfg, tmp_path / "s1", progress=False)
    assert not first["hit"] and first["sem"].shape == (len(frames), DEPTH, cfg.semantic_dim)
    assert first["act"].shape == (len(frames), DEPTH, 2) and first["importance"].shape == (DEPTH,)
    again = T.stage1(teacher, frames, cfg, tmp_path / "s1", progress=False)
    assert again["hit"]
    torch.testing.assert_close(again["sem"], first["sem"])
    torch.testing.assert_close(again["act"], first["act"])
    # stage 2 reuses the stage-1 cache by key, and the whole artifact by hash(teacher, data, config)
    out = T.train_student(teacher, data, cfg, progress=False)
    assert (out / T.ARTIFACT).exists()
    assert T.json.loads((out / T.MANIFEST).read_text())["stage1"]["reused"] is False
    monkeypatch.setattr(T, "_train", lambda *a, **k: pytest.fail("retrained although the artifact is cached"))
    assert T.train_student(teacher, data, cfg, progress=False) == out
    monkeypatch.undo()
    other = T.train_student(teacher, data, dataclasses.replace(cfg, budget=0.7), progress=False)  # new stage 2 only
    assert other != out and T.json.loads((other / T.MANIFEST).read_text())["stage1"]["reused"] is True


def test_variants_parse():
    assert make_method("actdistill@budget0.3").config("mock-v1").budget == 0.3
    assert make_method("actdistill@static").config("mock-v1").static is True
    assert make_method("actdistill@nograph").config("mock-v1").use_graph is False
    assert make_method("actdistill@uniform").config("mock-v1").router_init == "uniform"
    pinned = make_method("actdistill@pinned").config("mock-v1")
    assert (pinned.router_init, pinned.router_init_logit, pinned.lr_router) == ("uniform", 4.0, 1e-6)
    assert make_method("actdistill").config("mock-v1") == pinned  # the default since session 8
    free = make_method("actdistill@free").config("mock-v1")  # a freely learning router (sessions 6-7)
    assert (free.router_init, free.router_init_logit, free.lr_router, free.lr) == ("importance", 2.0, 3e-5, 1e-4)
    assert make_method("actdistill@uniform").config("mock-v1").lr_router == 3e-5


def test_uniform_router_init_opens_shallow_pis_layers():
    from methods.actdistill.train import build_router, uniform_mask

    assert uniform_mask(18, 0.33).nonzero().flatten().tolist() == [0, 3, 7, 10, 14, 17]  # Shallow-pi keep6
    model = ReferenceVLA(ModelConfig(cameras=["top"], image_size=32, stem_channels=[8], grid=4, proprio_dim=2,
                                     action_dim=2, chunk=4, width=32, heads=2, depth=18, expert_width=32))
    r = build_router(model, debug_cfg(router_init="uniform", budget=0.33), torch.ones(18))
    assert (r.gate.bias > 0).nonzero().flatten().tolist() == [0, 3, 7, 10, 14, 17]
    with pytest.raises(ValueError, match="importance | uniform | zero"):
        build_router(model, debug_cfg(router_init="random"), torch.ones(18))


def test_debug_config_end_to_end_on_mock(tmp_path):
    from methods.reference import checkpoint as ckpt

    if not (ckpt.checkpoint_dir("mock-v1") / ckpt.MANIFEST).exists():
        pytest.skip("no mock-v1 reference checkpoint (make teacher SUITE=mock-v1)")
    from harness.runner import run
    from harness.specs import RunSpec

    rd = run(RunSpec(method="actdistill", suite="mock-v1", profile="smoke", results=str(tmp_path), debug=True,
                     limit=2, skip_profile=True, cache_dir=str(tmp_path / "cache")), progress=False,
             log=lambda s: None)
    eps = rd.read_episodes()
    assert len(eps) == 2 and all(e["error"] is None for e in eps), eps
    usage = eps[0]["method_stats"]["block_usage"]
    assert len(usage) == 18 and all(0.0 <= u <= 1.0 for u in usage)
    assert eps[0]["method_stats"]["blocks_executed_mean"] == pytest.approx(sum(usage))


@pytest.mark.parametrize("head", ["regression", "discrete"])
def test_gated_pass_and_task_loss_match_the_teacher_for_query_heads(head):
    from methods.actdistill.student import task_loss

    torch.manual_seed(0)
    cfg = ModelConfig(cameras=["top"], image_size=32, stem_channels=[8], grid=4, proprio_dim=2, action_dim=2,
                      chunk=4, width=32, heads=2, depth=DEPTH, expert_width=32, head=head, vocab_size=10)
    m = ReferenceVLA(cfg).eval()
    g = torch.Generator().manual_seed(0)
    images = {"top": torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8, generator=g)}
    text, proprio = torch.tensor([[4, 5, 6]] * 3), torch.randn(3, 2, generator=g)
    actions = torch.randn(3, 4, 2, generator=g)
    a = (actions - m.action_mean) / m.action_std
    w = torch.tensor([1.0, 0.5])
    for skip in (set(), {1, 4}):
        gates = torch.tensor([[0.0 if i in skip else 1.0 for i in range(DEPTH)]] * 3)
        with torch.no_grad():
            _, hs, _ = gated_pass(m, m.embed_prefix(images, text, proprio), gates, [expert_tokens(m, a, None)])
            mine = task_loss(m, hs[0], a, None, w)
            ref = m.action_loss(m.forward_prefix(m.embed_prefix(images, text, proprio), skip=skip), actions,
                                skip=skip, weights=w)
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_balance_loss_counts_the_gates_that_run():
    """Session 5's failure: soft mean exactly on the budget (loss 0) while 9 of 18 gates sit just above the
    threshold and run. The hard-gate balance loss sees the 9 open layers and pushes every gate down."""
    soft = torch.tensor([[0.51] * 9 + [0.39] * 9], requires_grad=True)
    assert float(router_balance_loss(soft, 0.45, on="soft")) == pytest.approx(0.0, abs=1e-9)
    hard = router_balance_loss(soft, 0.45, on="hard")
    assert float(hard) == pytest.approx(18 * (0.5 - 0.45) ** 2)
    hard.backward()
    assert (soft.grad > 0).all()  # gradient descent lowers every gate
    under = torch.tensor([[0.9] * 6 + [0.1] * 12], requires_grad=True)  # 6 open < 8.1: pulled up
    router_balance_loss(under, 0.45, on="hard").backward()
    assert (under.grad < 0).all()
    with pytest.raises(ValueError, match="'mean'"):
        router_balance_loss(soft, 0.45, on="mean")


def test_config_rejects_unknown_balance_mode():
    from harness.interfaces import ConfigError

    cfg = debug_cfg(balance_on="mean")
    with pytest.raises(ConfigError, match="balance_on"):
        make_method("actdistill").distill(None, DataSource(make_suite("mock-v1"), Path(".cache")), cfg)
