"""The model anatomy (harness/anatomy.py) on a tiny random reference model: skipping, pruning, attention maps,
KV reuse — each checked against the uncompressed computation and the FLOP counter."""
import pytest
import torch

from harness.anatomy import (KVCache, PrefixState, VLAAnatomy, attention_received, check_keep, frame_similarity,
                             keep_top_vision)
from harness.profiling.flops import count_flops
from methods.reference.model import ModelConfig, ReferenceVLA

CFG = dict(cameras=["a", "b"], image_size=32, stem_channels=[8], grid=4, width=32, expert_width=32, heads=2,
           depth=4, chunk=4, flow_steps=3, proprio_dim=3, action_dim=2, vocab_size=20, max_text_len=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReferenceVLA(ModelConfig(**CFG)).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = {c: torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8, generator=g) for c in ("a", "b")}
    text = torch.tensor([[4, 5, 6, 7, 8]])
    proprio = torch.randn(1, 3, generator=g)
    noise = torch.randn(1, 4, 2, generator=g)
    return images, text, proprio, noise


def run(model, inputs, **kw):
    images, text, proprio, noise = inputs
    sample_kw = {k: kw.pop(k) for k in ("steps",) if k in kw}
    with torch.no_grad():
        state = model.forward_prefix(model.embed_prefix(images, text, proprio), **kw)
        return model.sample_actions(state, noise.clone(), skip=kw.get("skip", frozenset()), **sample_kw), state


def test_protocol_and_spans(model, inputs):
    assert isinstance(model, VLAAnatomy)
    assert model.n_layers == 4
    _, state = run(model, inputs)
    sp = state.spans
    assert sp.vision == {"a": (0, 16), "b": (16, 32)} and sp.language == (32, 37) and sp.proprio == (37, 38)
    assert sp.n_tokens == 38 == state.n_tokens
    assert int(sp.vision_mask().sum()) == 32 and int(sp.protected_mask().sum()) == 6


@pytest.mark.parametrize("skip", [{0}, {2}, {1, 3}])
def test_skipping_a_layer_removes_exactly_its_flops(model, inputs, skip):
    full, _ = count_flops(lambda: run(model, inputs))
    reduced, _ = count_flops(lambda: run(model, inputs, skip=frozenset(skip)))
    _, state = run(model, inputs)
    n, d = state.n_tokens, model.cfg.width
    expected = 0
    for i in skip:
        x = torch.zeros(1, n, d)
        expected += count_flops(model.blocks[i], x)[0]
        k = torch.zeros(1, model.cfg.heads, n, d // model.cfg.heads)
        h = torch.zeros(1, model.cfg.chunk, model.cfg.expert_width)
        expected += model.cfg.flow_steps * count_flops(model.expert[i], h, k, k)[0]
    assert expected > 0
    assert full - reduced == expected


def test_skipped_layers_change_the_output_and_are_absent_from_the_state(model, inputs):
    a_full, _ = run(model, inputs)
    a_skip, st = run(model, inputs, skip=frozenset({1}))
    assert 1 not in st.kv and set(st.kv) == {0, 2, 3}
    assert not torch.allclose(a_full, a_skip)


def test_keep_ratio_one_is_exactly_the_unpruned_output(model, inputs):
    a_full, _ = run(model, inputs)

    def hook(state: PrefixState):
        return keep_top_vision(state, torch.randn(state.ids.shape), keep_ratio=1.0)

    a_keep, st = run(model, inputs, hooks={1: hook})
    assert torch.equal(a_full, a_keep)
    assert st.n_tokens == 38


def test_pruning_keeps_language_and_proprio(model, inputs):
    def hook(state: PrefixState):
        return keep_top_vision(state, attention_received(state, 0), keep_ratio=0.25)

    a, st = run(model, inputs, hooks={0: hook}, need_attn={0})
    assert st.n_tokens == 8 + 6  # a quarter of 32 vision tokens + 5 language + 1 proprio
    ids = set(st.ids[0].tolist())
    assert set(range(32, 38)) <= ids
    assert st.kv[0][0].shape[2] == 38 and st.kv[1][0].shape[2] == 14  # pruned after block 0
    assert torch.isfinite(a).all()
    flops_full, _ = count_flops(lambda: run(model, inputs))
    flops_pruned, _ = count_flops(lambda: run(model, inputs, hooks={0: hook}, need_attn={0}))
    assert flops_pruned < flops_full


def test_a_hook_that_drops_language_is_refused(model, inputs):
    def bad(state: PrefixState):
        keep = [i for i in range(state.n_tokens) if i != 33]  # drops a language token
        return torch.tensor([keep])

    with pytest.raises(ValueError, match="language or proprio"):
        run(model, inputs, hooks={0: bad})
    st = PrefixState(torch.zeros(1, 38, 32), torch.arange(38)[None], run(model, inputs)[1].spans)
    with pytest.raises(ValueError):
        check_keep(torch.tensor([[0, 1, 2]]), st)


def test_attention_maps_on_request_match_the_sdpa_path(model, inputs):
    a_sdpa, st0 = run(model, inputs)
    a_attn, st1 = run(model, inputs, need_attn=True)
    assert not st0.attn and set(st1.attn) == {0, 1, 2, 3}
    torch.testing.assert_close(a_sdpa, a_attn, rtol=1e-4, atol=1e-5)
    w = st1.attn[2]
    assert w.shape == (1, 2, 38, 38)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 38))
    # action-query -> prefix-key maps of the expert (Shallow-pi's attention transfer)
    maps: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        model.sample_actions(st0, inputs[3].clone(), need_attn=True, attn_out=maps)
    assert set(maps) == {0, 1, 2, 3} and maps[0].shape == (1, 2, 4, 38)


def test_kv_reuse_with_an_unchanged_frame_matches_the_uncached_output(model, inputs):
    a_full, st = run(model, inputs)
    cache = st.cache()
    assert isinstance(cache, KVCache) and set(cache.layers) == {0, 1, 2, 3}
    reuse = st.spans.vision_mask()  # every vision token reused, language/proprio recomputed
    a_cached, st2 = run(model, inputs, reuse=cache, reuse_mask=reuse)
    torch.testing.assert_close(a_cached, a_full, rtol=1e-4, atol=1e-5)
    assert st2.kv[3][0].shape[2] == 38  # the cache still holds every token
    flops_full, _ = count_flops(lambda: run(model, inputs))
    flops_cached, _ = count_flops(lambda: run(model, inputs, reuse=cache, reuse_mask=reuse))
    assert flops_cached < 0.7 * flops_full
    # no token reused == the uncached computation
    a_none, _ = run(model, inputs, reuse=cache, reuse_mask=torch.zeros(38, dtype=torch.bool))
    torch.testing.assert_close(a_none, a_full, rtol=1e-4, atol=1e-5)


def test_frame_similarity():
    img = torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8)
    assert torch.allclose(frame_similarity(img, img, 4), torch.ones(16))
    other = img.clone()
    other[:8, :8] = 255 - other[:8, :8]
    sim = frame_similarity(img, other, 4)
    assert sim[0] < 0.99 and torch.allclose(sim[1:], torch.ones(15))
