"""Real-checkpoint adapters (methods/openvla, methods/smolvla) on tiny random transformers configs: the model
anatomy (spans, skipping with exact FLOP accounting, pruning, attention maps, KV reuse), token pruning on top,
determinism, save/load round trips through the real loaders, OpenVLA's action de-tokenisation, and the harness's
teacher override (RunSpec.teacher / --teacher / TEACHER=)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="adapters need the openvla/smolvla extra: pip install -e .[openvla]")

from harness.anatomy import VLAAnatomy, attention_received, keep_top_vision
from harness.interfaces import Task
from harness.profiling.flops import count_flops
from methods.openvla.adapter import OpenVLAPolicy
from methods.openvla.common import MissingCheckpointError, MissingExtraError, require_transformers
from methods.openvla.config import OpenVLAConfig
from methods.openvla.model import build_tiny as build_openvla
from methods.openvla.model import hf_to_timm, load_openvla
from methods.smolvla.adapter import SmolVLAPolicy
from methods.smolvla.config import SmolVLAConfig
from methods.smolvla.model import build_tiny as build_smolvla
from methods.smolvla.model import load_smolvla
from methods.token_pruning.config import FastVConfig, VLACacheConfig
from methods.token_pruning.pruning import FastVPolicy, VLACachePolicy

TEXTS = ["reach the red target", "reach the green target"]
TASK = Task("red", "reach the red target")


def make_obs(seed: int = 0, moved: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    if moved:
        img[:8, :8] = 255 - img[:8, :8]
    return {"images": {"top": img}, "proprio": np.asarray([0.2, -0.4], dtype=np.float32), "instruction": TEXTS[0]}


@pytest.fixture(scope="module")
def openvla():
    torch.manual_seed(0)
    model = build_openvla(action_dim=2, image_size=32, texts=TEXTS, seed=0, camera="top", layers=4)
    return OpenVLAPolicy(model, OpenVLAConfig(tiny=True), n_execute=1, cameras=("top",))


@pytest.fixture(scope="module")
def smolvla():
    model = build_smolvla(
        cameras=["top"],
        image_hw=(32, 32),
        state_dim=2,
        action_dim=2,
        texts=TEXTS,
        seed=0,
        vlm_layers=4,
        chunk=4,
        n_action_steps=2,
        num_steps=2,
    )
    g = torch.Generator().manual_seed(5)  # non-trivial normalisation statistics (they must survive a round trip)
    model.set_stats(
        {
            "observation.state.mean": torch.randn(2, generator=g),
            "observation.state.std": torch.rand(2) + 0.5,
            "action.mean": torch.randn(2, generator=g),
            "action.std": torch.rand(2, generator=g) + 0.5,
        }
    )
    return SmolVLAPolicy(model, SmolVLAConfig(tiny=True), n_execute=2, cameras=("top",))


@pytest.fixture(params=["openvla", "smolvla"])
def policy(request, openvla, smolvla):
    return {"openvla": openvla, "smolvla": smolvla}[request.param]


def forward(pol, obs=None, **kw):
    """(actions, state) of one call with anatomy options (skip, hooks, need_attn, reuse...)."""
    m = pol.model
    pol.reset(TASK, 7)
    skip = kw.get("skip", frozenset())
    with torch.no_grad():
        st = m.forward_prefix(m.embed_prefix(*pol.inputs(obs or make_obs())), **kw)
        return m.sample_actions(st, pol.noise(), skip=skip), st


def test_spans_cover_the_prefix(policy):
    m = policy.model
    assert isinstance(m, VLAAnatomy)
    _, st = forward(policy)
    sp, n = st.spans, st.n_tokens
    assert sp.n_tokens == n
    owner = torch.zeros(n, dtype=torch.long)
    for s, e in [*sp.vision.values(), sp.language, sp.proprio]:
        owner[s:e] += 1
    outside = torch.nonzero(owner == 0).flatten().tolist()
    assert int(owner.max()) == 1, "spans overlap"
    if isinstance(policy, OpenVLAPolicy):  # Prismatic: <s> + patches + prompt; no proprio input
        assert outside == [0] and sp.vision == {"top": (1, 17)} and sp.proprio == (n, n)
        assert int(policy.text_ids(TEXTS[0])[0, -1]) == m.empty_token_id  # "▁" appended as at training time
    else:  # SmolVLA: images, language, one state token
        assert outside == [] and sp.vision == {"top": (0, 16)} and sp.proprio == (n - 1, n)
    ((s, e),) = sp.vision.values()
    assert round((e - s) ** 0.5) ** 2 == e - s  # square patch grid (VLA-Cache's per-cell similarity)


def _layer_cost_openvla(m, n: int) -> int:
    """Hand count (2 x MACs) of one Llama layer: the prefix pass over n tokens + the A-1 decode steps."""
    c = m.text_config
    d, i_dim, hd = c.hidden_size, c.intermediate_size, m.head_dim
    kvd = c.num_key_value_heads * hd

    def tokens(t: int, keys: int) -> int:
        return 2 * t * d * (d + 2 * kvd) + 2 * 2 * t * keys * m.n_heads * hd + 2 * t * d * d + 3 * 2 * t * d * i_dim

    total = tokens(n, n)
    for j in range(m.action_dim - 1):
        total += tokens(1, n + j + 1)
    return total


def test_skipping_a_layer_changes_the_output_and_removes_its_flops(policy):
    m = policy.model
    full_a, st = forward(policy)
    fl = {}
    for skip in ((), (1,), (2,), (1, 2)):
        fl[skip] = count_flops(lambda s=skip: forward(policy, skip=frozenset(s)))[0]
    drop1, drop2 = fl[()] - fl[(1,)], fl[()] - fl[(2,)]
    assert drop1 > 0 and drop2 > 0
    assert fl[()] - fl[(1, 2)] == drop1 + drop2  # layers are removed independently
    if isinstance(policy, OpenVLAPolicy):
        assert drop1 == drop2 == _layer_cost_openvla(m, st.n_tokens)  # exact against a hand count
    else:
        fl3 = count_flops(lambda: forward(policy, skip=frozenset({3})))[0]
        assert fl[()] - fl3 == drop1  # odd layers: cross-attention experts, same cost
        assert drop2 != drop1  # even layer: self-attention expert (no K/V re-projection of the prefix)
    skipped, _ = forward(policy, skip=frozenset({1}))
    assert not torch.allclose(full_a, skipped)
    assert len(m.layer_modules(1)) == (1 if isinstance(policy, OpenVLAPolicy) else 2)


def test_attention_maps_and_fastv_pruning(policy):
    _, st = forward(policy, need_attn={1})
    w = st.attn[1]
    assert w.shape == (1, w.shape[1], st.n_tokens, st.n_tokens)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    if isinstance(policy, OpenVLAPolicy):  # causal LM: nothing attends to later tokens
        assert float(w[0, :, 0, 1:].abs().max()) == 0.0
    else:  # block-causal: images and language do not see the state token
        assert float(w[0, :, : st.spans.proprio[0], -1].abs().max()) == 0.0
    keep = keep_top_vision(st, attention_received(st, 1), 0.5)
    assert keep.shape[1] == st.n_tokens - 8

    policy.reset(TASK, 3)
    base = policy.infer(make_obs())
    same = FastVPolicy(policy, FastVConfig(keep_ratio=1.0, prune_after=1), "fastv")
    same.reset(TASK, 3)
    np.testing.assert_array_equal(same.infer(make_obs()).actions, base.actions)  # keep 1.0 = the teacher exactly
    fv = FastVPolicy(policy, FastVConfig(keep_ratio=0.5, prune_after=1), "fastv")
    fv.reset(TASK, 3)
    out = fv.infer(make_obs())
    assert out.actions.shape == base.actions.shape and np.isfinite(out.actions).all()
    assert out.extras["vision_tokens_kept"] == 8 and out.extras["vision_tokens_total"] == 16
    f_teacher = count_flops(lambda: (policy.reset(TASK, 3), policy.infer(make_obs())))[0]
    f_fastv = count_flops(lambda: (fv.reset(TASK, 3), fv.infer(make_obs())))[0]
    assert f_fastv < f_teacher


def test_kv_reuse_is_exact_for_unchanged_tokens_and_vla_cache_runs(policy):
    a_full, st = forward(policy)
    cache = st.cache()
    reuse = torch.zeros(st.n_tokens, dtype=torch.bool)
    reuse[st.spans.vision["top"][0] : st.spans.vision["top"][0] + 6] = True  # the same frame: exact
    a_reused, st2 = forward(policy, reuse=cache, reuse_mask=reuse)
    torch.testing.assert_close(a_reused, a_full, rtol=1e-4, atol=1e-5)
    assert st2.n_tokens == st.n_tokens - 6
    vc = VLACachePolicy(policy, VLACacheConfig(keep_ratio=0.5), "vla_cache")
    vc.reset(TASK, 1)
    vc.infer(make_obs())
    second = vc.infer(make_obs(moved=1))  # top-left cells changed, the rest static -> reused
    assert second.extras["tokens_reused"] > 0 and np.isfinite(second.actions).all()


def test_deterministic_given_seed(policy):
    policy.reset(TASK, 11)
    a = policy.infer(make_obs()).actions
    policy.reset(TASK, 11)
    np.testing.assert_array_equal(policy.infer(make_obs()).actions, a)
    policy.reset(TASK, 12)
    b = policy.infer(make_obs()).actions
    if isinstance(policy, SmolVLAPolicy):  # flow noise is seeded per episode
        assert not np.array_equal(a, b)
    else:  # greedy decoding: no randomness at all
        np.testing.assert_array_equal(a, b)


def test_openvla_round_trip_in_checkpoint_layout(openvla, tmp_path):
    m = openvla.model
    m.save_pretrained(tmp_path / "ov")
    from safetensors.torch import load_file, save_file

    keys = set(load_file(str(tmp_path / "ov" / "model.safetensors")))
    assert "vision_backbone.featurizer.blocks.0.attn.qkv.weight" in keys  # timm layout, as openvla/openvla-7b
    assert (
        "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in keys
        and "vision_backbone.featurizer.reg_token" in keys
    )
    assert "vision_backbone.fused_featurizer.pos_embed" in keys and "projector.fc3.weight" in keys
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in keys and "language_model.lm_head.weight" in keys
    assert not any(".vit." in k for k in keys)
    # the sharded layout of the real checkpoint (index + shards), timm's `gamma` LayerScale name, an unused SigLIP
    # MAP head: all load
    sd = load_file(str(tmp_path / "ov" / "model.safetensors"))
    sd = {k.replace("ls2.scale_factor", "ls2.gamma"): v for k, v in sd.items()}
    sd["vision_backbone.fused_featurizer.attn_pool.latent"] = torch.zeros(1, 1, 48)
    names = sorted(sd)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for f, ks in shards.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(tmp_path / "ov" / f))
    (tmp_path / "ov" / "model.safetensors").unlink()
    (tmp_path / "ov" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: f for f, ks in shards.items() for k in ks}})
    )
    m2 = load_openvla(tmp_path / "ov", camera="top")
    pol2 = OpenVLAPolicy(m2, openvla.cfg, n_execute=1, cameras=("top",))
    a1, st1 = forward(openvla)
    a2, st2 = forward(pol2)
    torch.testing.assert_close(st2.x, st1.x)
    torch.testing.assert_close(a2, a1)
    assert hf_to_timm(m2.state_dict(), m2).keys() == hf_to_timm(m.state_dict(), m).keys()


def test_openvla_detokenisation_matches_predict_action(openvla):
    """OpenVLA's predict_action in numpy (vocab - token - 1 -> bin centre -> q01/q99 where mask)."""
    m = openvla.model
    low, high, mask = np.array([-2.0, 0.5]), np.array([3.0, 1.5]), np.array([True, False])
    m.norm_stats["test"] = {"action": {"q01": low.tolist(), "q99": high.tolist(), "mask": mask.tolist()}}
    try:
        m.set_unnorm_key("test")
        tokens = np.array([[m.vocab_size - 1, m.vocab_size - 40], [m.vocab_size - 63, 3]])
        bins = np.linspace(-1, 1, m.n_bins)
        centers = (bins[:-1] + bins[1:]) / 2.0
        disc = np.clip(m.vocab_size - tokens - 1, 0, centers.shape[0] - 1)
        norm = centers[disc]
        want = np.where(mask, 0.5 * (norm + 1) * (high - low) + low, norm)
        got = m.tokens_to_actions(torch.tensor(tokens)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        back = m.tokens_to_actions(m.actions_to_tokens(torch.tensor(got, dtype=torch.float32)))
        np.testing.assert_allclose(back.numpy(), got, rtol=1e-5, atol=1e-6)  # bin centres are fixed points
    finally:
        del m.norm_stats["test"]
        m.set_unnorm_key("tiny")


def test_smolvla_round_trip_lerobot_layout(smolvla, tmp_path):
    m = smolvla.model
    m.save_pretrained(tmp_path / "sv")
    from safetensors.torch import load_file, save_file

    keys = set(load_file(str(tmp_path / "sv" / "model.safetensors")))
    assert "model.vlm_with_expert.vlm.model.text_model.layers.0.self_attn.q_proj.weight" in keys  # LeRobot's names
    assert (
        "model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight" in keys and "model.state_proj.weight" in keys
    )
    m2 = load_smolvla(tmp_path / "sv", cameras=["top"])
    torch.testing.assert_close(m2.action_std, m.action_std)
    pol2 = SmolVLAPolicy(m2, smolvla.cfg, n_execute=2, cameras=("top",))
    a1, _ = forward(smolvla)
    a2, _ = forward(pol2)
    torch.testing.assert_close(a2, a1)
    # LeRobot < 0.4 kept the statistics as buffers inside model.safetensors
    for f in (tmp_path / "sv").glob("*normalizer_processor.safetensors"):
        f.unlink()
    w = load_file(str(tmp_path / "sv" / "model.safetensors"))
    w["normalize_inputs.buffer_observation_state.mean"] = m.state_mean
    w["normalize_inputs.buffer_observation_state.std"] = m.state_std
    w["unnormalize_outputs.buffer_action.mean"] = m.action_mean
    w["unnormalize_outputs.buffer_action.std"] = m.action_std
    save_file(w, str(tmp_path / "sv" / "model.safetensors"))
    m3 = load_smolvla(tmp_path / "sv", cameras=["top"])
    torch.testing.assert_close(m3.action_mean, m.action_mean)
    torch.testing.assert_close(m3.state_std, m.state_std)


def test_flow_and_token_losses_train_through_the_anatomy(policy):
    m = policy.model
    m.train()
    try:
        st = m.forward_prefix(m.embed_prefix(*policy.inputs(make_obs())))
        chunk = 1 if isinstance(policy, OpenVLAPolicy) else m.chunk
        loss = m.action_loss(st, torch.zeros(1, chunk, 2), generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads = [p.grad for p in m.layer_modules(0)[0].parameters() if p.grad is not None]
        assert (
            torch.isfinite(loss) and float(loss.detach()) > 0 and grads and any(float(g.abs().sum()) > 0 for g in grads)
        )
    finally:
        m.zero_grad(set_to_none=True)
        m.eval()


def test_missing_extra_and_missing_checkpoint_errors(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e \.\[openvla\]"):
        require_transformers("openvla")
    monkeypatch.delitem(sys.modules, "transformers")
    monkeypatch.delenv("VLA_BENCH_OPENVLA_CHECKPOINT", raising=False)
    from harness.interfaces import DataSource
    from harness.plugins import make_method, make_suite

    method = make_method("openvla")
    with pytest.raises(MissingCheckpointError, match="huggingface-cli download openvla/openvla-7b.*openvla@tiny"):
        method.distill(None, DataSource(make_suite("mock-v1"), tmp_path), method.config("mock-v1"))


def test_teacher_override(tmp_path, capsys):
    from harness.cli import main
    from harness.runner import build_policy
    from harness.specs import RunSpec
    from methods.openvla.model import OpenVLAModel

    plain = RunSpec(method="fastv", suite="mock-v1")
    over = RunSpec(method="fastv", suite="mock-v1", teacher="openvla@tiny")
    assert "teacher" not in plain.identity("c", "p")  # runs with the suite's own teacher keep their ids
    assert over.identity("c", "p")["teacher"] == "openvla@tiny" and over.run_id("c", "p") != plain.run_id("c", "p")
    assert RunSpec(method="fastv", suite="mock-v1", teacher="teacher").teacher == "reference"  # aliases resolved
    built = build_policy(
        RunSpec(method="fastv@keep0.5", suite="mock-v1", teacher="openvla@tiny", cache_dir=str(tmp_path))
    )
    assert built.teacher_id == "openvla@tiny" and isinstance(built.policy.model, OpenVLAModel)
    rc = main(
        [
            "bench",
            "--method",
            "fastv",
            "--suite",
            "mock-v1",
            "--teacher",
            "opnevla",
            "--results",
            str(tmp_path / "r"),
            "--limit",
            "1",
            "--no-profile",
            "-q",
        ]
    )
    assert rc == 2 and "did you mean 'openvla'" in capsys.readouterr().err


def test_openvla_matches_transformers_generate_and_reads_the_penultimate_vit_block(openvla):
    """The hand-written prefix pass + decode loop equals LlamaForCausalLM on the same multimodal embeddings
    (logits and HF greedy generate); each vision tower returns the second-to-last block's patch tokens."""
    m = openvla.model
    openvla.reset(TASK, 0)
    images, text, proprio = openvla.inputs(make_obs())
    with torch.no_grad():
        st0 = m.embed_prefix(images, text, proprio)
        x = st0.x.clone()
        st = m.forward_prefix(st0)
        ours = m.decode_tokens(st)
        ref = m.language_model(inputs_embeds=x)
        torch.testing.assert_close(m._logits(st.x[:, -1:])[:, 0], ref.logits[:, -1], rtol=1e-4, atol=1e-4)
        gen = m.language_model.generate(
            inputs_embeds=x,
            max_new_tokens=m.action_dim,
            min_new_tokens=m.action_dim,
            do_sample=False,
            attention_mask=torch.ones(x.shape[:2], dtype=torch.long),
        )
        assert gen[:, -m.action_dim :].tolist() == ours.tolist()
        pix = m.pixels(images["top"])
        for tower in (m.vision_backbone.featurizer, m.vision_backbone.fused_featurizer):
            hs = tower.vit((pix - tower.mean) / tower.std, output_hidden_states=True).hidden_states
            torch.testing.assert_close(tower(pix), hs[-2][:, tower.n_prefix :])
            assert not torch.allclose(tower(pix), hs[-1][:, tower.n_prefix :])


def test_unnorm_key_follows_the_suite(tmp_path):
    from methods.openvla.adapter import pick_unnorm_key

    stats = {k: {} for k in ("bridge_orig", "libero_object_no_noops", "libero_goal")}
    (tmp_path / "config.json").write_text(json.dumps({"norm_stats": stats}))
    assert pick_unnorm_key(tmp_path, "", "libero_object-v1") == "libero_object_no_noops"
    assert pick_unnorm_key(tmp_path, "", "libero_goal-v1") == "libero_goal"
    assert pick_unnorm_key(tmp_path, "bridge_orig", "libero_goal-v1") == "bridge_orig"
    assert pick_unnorm_key(tmp_path, "", "simpler_pick-v1") is None  # the loader then lists the keys
    (tmp_path / "config.json").write_text(json.dumps({"norm_stats": {"only": {}}}))
    assert pick_unnorm_key(tmp_path, "", "libero_goal-v1") == "only"
