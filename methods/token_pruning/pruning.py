"""Training-free token pruning / KV caching on a model that implements :mod:`harness.anatomy`.

Every policy here wraps a *base* policy with the reference-policy helpers (``.model``, ``inputs(obs)``,
``noise()``, ``postprocess()``, ``n_execute``, ``flow_steps``, ``generate``) — the suite's teacher, or a
distilled student (Shallow-pi + FastV). Pruned tokens are removed from the computation (``PrefixState.select``),
reused tokens are not recomputed (``forward_prefix(reuse=...)``): the FLOP counter sees only what runs.
Scoring needs attention maps, which are computed explicitly (matmul + softmax) at the scoring layers instead of
SDPA; their matmuls are the same FLOPs as SDPA's and are counted; the softmax is not (as for SDPA).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from harness.anatomy import KVCache, PrefixState, attention_received, frame_similarity, keep_top_vision
from harness.interfaces import ActionChunk, Policy, Task, derive_seed


def lang_positions(state: PrefixState) -> torch.Tensor:
    """Current positions (of batch row 0) of the language tokens that are valid keys."""
    lo, hi = state.spans.language
    ids = state.ids[0]
    m = (ids >= lo) & (ids < hi)
    if state.valid is not None:
        m &= state.valid[0]
    return torch.nonzero(m, as_tuple=False).flatten()


class TokenPolicy(Policy):
    """Common infer loop: embed -> prefix (method-specific) -> flow expert -> post-processing, with statistics."""

    def __init__(self, base: Any, cfg: Any, name: str):
        self.base, self.cfg, self.name = base, cfg, name
        self.model = base.model
        self.actions_per_call = base.actions_per_call
        self._stats: list[dict[str, float]] = []

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def reset(self, task: Task, seed: int) -> None:
        self.base.reset(task, seed)
        self.seed = int(seed)
        self._stats = []

    # subclasses: the prefix pass; return the final state and per-call statistics
    def prefix(self, state: PrefixState, images: dict[str, torch.Tensor]) -> tuple[PrefixState, dict[str, Any]]:
        raise NotImplementedError

    def infer(self, obs: dict[str, Any]) -> ActionChunk:
        b, m = self.base, self.model
        if hasattr(b, "calls"):
            b.calls += 1
        with torch.inference_mode():
            images, text, proprio = b.inputs(obs)
            state = m.embed_prefix(images, text, proprio)
            state, info = self.prefix(state, images)
            actions = m.sample_actions(state, b.noise(), steps=b.flow_steps)
            info.setdefault("tokens_kept", int(state.n_tokens))
            extras: dict[str, Any] = dict(info)
            if getattr(b, "generate", False):
                ids = m.generate_text(state, b.cfg.text_max_len or None)[0]
                extras["text"] = b.lang_tok.decode(ids)
        self._stats.append({k: float(v) for k, v in info.items() if isinstance(v, (int, float))})
        return ActionChunk(b.postprocess(actions), n_execute=b.n_execute, extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"infer_calls": len(self._stats), "method": self.name}
        keys = sorted({k for s in self._stats for k in s})
        for k in keys:
            vals = [s[k] for s in self._stats if k in s]
            out[f"mean_{k}"] = float(np.mean(vals)) if vals else None
        return out


def _layer_counts(n_layers: int, n_vis: int, stages: list[tuple[int, int]]) -> list[int]:
    """Vision tokens processed by each block, given (after_block, n_kept) pruning stages."""
    counts, cur, it = [], n_vis, dict(stages)
    for i in range(n_layers):
        counts.append(cur)
        if i in it:
            cur = it[i]
    return counts


class HookPruningPolicy(TokenPolicy):
    """Pruning with hooks after given blocks (FastV, SparseVLM, random)."""

    skip: frozenset[int] = frozenset()

    def hooks(self) -> tuple[dict[int, Callable[[PrefixState], torch.Tensor | None]], set[int]]:
        raise NotImplementedError

    def prefix(self, state, images):
        m = self.model
        n_vis = int(state.is_vision()[0].sum())
        if self.cfg.keep_ratio >= 1.0:  # identity: the teacher's exact computation (no scoring)
            state = m.forward_prefix(state, skip=self.skip)
            stages: list[tuple[int, int]] = []
        else:
            self._stages = []
            hooks, attn = self.hooks()
            state = m.forward_prefix(state, skip=self.skip, hooks=hooks, need_attn=attn or False)
            stages = self._stages
        kept = int(state.is_vision()[0].sum())
        layers = [i for i in range(m.n_layers) if i not in self.skip]
        counts = _layer_counts(m.n_layers, n_vis, stages)
        per_layer = [counts[i] for i in layers]
        return state, {"vision_tokens_total": n_vis, "vision_tokens_kept": kept,
                       "vision_keep_mean_per_layer": float(np.mean(per_layer)) / max(n_vis, 1)}

    def _record(self, layer: int, keep: torch.Tensor, state: PrefixState) -> torch.Tensor:
        n_vis_kept = int(state.is_vision()[0][keep[0]].sum())
        self._stages.append((layer, n_vis_kept))
        return keep


class FastVPolicy(HookPruningPolicy):
    def hooks(self):
        k, cfg = self.cfg.prune_after, self.cfg

        def hook(state: PrefixState) -> torch.Tensor:
            if cfg.score_from == "last":
                scores = attention_received(state, k)
            elif cfg.score_from == "language":
                scores = attention_received(state, k, lang_positions(state))
            elif cfg.score_from == "all":
                scores = attention_received(state, k, torch.arange(state.n_tokens))
            else:
                raise ValueError(f"score_from must be last | language | all, got {cfg.score_from!r}")
            return self._record(k, keep_top_vision(state, scores, cfg.keep_ratio), state)

        return {k: hook}, {k}


def sparsevlm_schedule(keep_ratio: float, layers: list[int], n_layers: int, n_vis: int) -> list[int]:
    """Vision tokens kept after each stage: the dropped share grows linearly over the stages (1, 2, 3, ...) and is
    scaled so the mean over the blocks after the first stage equals ``1 - keep_ratio`` (the same per-block budget
    as one-shot pruning at ``keep_ratio``); clipped to [1 token, previous stage]."""
    layers = sorted(layers)
    ends = layers[1:] + [n_layers - 1]
    lengths = [e - s for s, e in zip(layers, ends)]  # blocks that run after stage j (until the next stage)
    w = [j + 1 for j in range(len(layers))]
    mean_w = sum(wj * lj for wj, lj in zip(w, lengths)) / max(1, sum(lengths))
    counts, prev = [], n_vis
    for wj in w:
        frac = 1.0 - (1.0 - keep_ratio) * wj / mean_w
        c = int(round(n_vis * frac))
        c = max(1, min(prev, c))
        counts.append(c)
        prev = c
    return counts


class SparseVLMPolicy(HookPruningPolicy):
    def hooks(self):
        cfg, m = self.cfg, self.model
        layers = sorted(i for i in cfg.prune_layers if 0 <= i < m.n_layers - 1)
        n_vis = sum(e - s for s, e in self._spans.vision.values())
        counts = sparsevlm_schedule(cfg.keep_ratio, layers, m.n_layers, n_vis)
        hooks = {}
        for layer, count in zip(layers, counts):
            def hook(state: PrefixState, layer: int = layer, count: int = count) -> torch.Tensor:
                w = state.attn[layer].mean(dim=1)  # (B, n, n) averaged over heads
                lang = lang_positions(state)
                rows = w[:, lang]  # (B, T, n): text queries -> all keys
                if cfg.rater_select and len(lang) > 1:
                    vis = state.is_vision()
                    rel = (rows * vis[:, None, :]).sum(-1)  # (B, T) attention each text token pays to vision
                    raters = rel >= rel.mean(dim=1, keepdim=True)
                    scores = (rows * raters[..., None]).sum(1) / raters.sum(1, keepdim=True).clamp_min(1)
                else:
                    scores = rows.mean(1)
                keep = keep_top_vision(state, scores, n_keep_vision=count)
                return self._record(layer, keep, state)
            hooks[layer] = hook
        return hooks, set(layers)

    def prefix(self, state, images):
        self._spans = state.spans
        return super().prefix(state, images)


class RandomPrunePolicy(HookPruningPolicy):
    def reset(self, task: Task, seed: int) -> None:
        super().reset(task, seed)
        self.gen = torch.Generator().manual_seed(derive_seed("random-prune", self.cfg.seed, seed))

    def hooks(self):
        k, cfg = self.cfg.prune_after, self.cfg

        def hook(state: PrefixState) -> torch.Tensor:
            scores = torch.rand(state.ids.shape, generator=self.gen)
            return self._record(k, keep_top_vision(state, scores, cfg.keep_ratio), state)

        return {k: hook}, set()


class VLACachePolicy(TokenPolicy):
    """Reuse the previous step's K/V of static (cosine >= threshold vs the previous frame), task-irrelevant
    vision patches; task relevance = top text->vision attention at a middle layer of the previous step."""

    def reset(self, task: Task, seed: int) -> None:
        super().reset(task, seed)
        self.cache: KVCache | None = None
        self.prev: dict[str, torch.Tensor] | None = None
        self.relevant: torch.Tensor | None = None  # (n_tokens,) bool over original positions

    def attn_layer(self) -> int:
        n = self.model.n_layers
        return n // 2 if self.cfg.attn_layer < 0 else min(self.cfg.attn_layer, n - 1)

    def prefix(self, state, images):
        cfg, m = self.cfg, self.model
        spans = state.spans
        n = state.n_tokens
        vis = spans.vision_mask()
        n_vis = int(vis.sum())
        if cfg.keep_ratio >= 1.0:
            return m.forward_prefix(state), {"tokens_kept": n, "vision_tokens_total": n_vis, "tokens_reused": 0,
                                             "vision_tokens_recomputed": n_vis, "static_tokens": 0}
        layer = self.attn_layer()
        reuse_mask = torch.zeros(n, dtype=torch.bool)
        n_static = 0
        if self.cache is not None and self.prev is not None:
            # patch tokens come first in each camera's span; tokens after grid*grid (e.g. the reference model's
            # keypoint tokens) summarise the whole image and are always recomputed (similarity -1)
            grid = getattr(m, "patch_grid", None) or int(math.isqrt(next(e - s for s, e in spans.vision.values())))
            sim = torch.full((n,), -1.0)
            for cam, (s, e) in spans.vision.items():
                sim[s:s + grid * grid] = frame_similarity(self.prev[cam][0], images[cam][0], grid)
            static = vis & (sim >= cfg.sim_threshold)
            n_static = int(static.sum())
            cand = static & ~(self.relevant if self.relevant is not None else torch.zeros_like(static))
            cap = int(math.floor((1.0 - cfg.keep_ratio) * n_vis + 1e-9))
            k = min(cap, int(cand.sum()))
            if k > 0:
                top = sim.masked_fill(~cand, float("-inf")).topk(k).indices
                reuse_mask[top] = True
        if bool(reuse_mask.any()):
            out = m.forward_prefix(state, need_attn={layer}, reuse=self.cache, reuse_mask=reuse_mask)
        else:
            out = m.forward_prefix(state, need_attn={layer})
        # relevance for the next step: text queries -> vision keys (columns are original positions: all tokens'
        # keys are present, reused ones from the cache)
        w = out.attn[layer].mean(dim=1)[0]  # (n_queries, n)
        lo, hi = spans.language
        rows = (out.ids[0] >= lo) & (out.ids[0] < hi)
        score = w[rows].mean(0) if bool(rows.any()) else w.mean(0)
        n_rel = int(round(cfg.relevant_ratio * n_vis))
        rel = torch.zeros(n, dtype=torch.bool)
        if n_rel > 0:
            rel[score.masked_fill(~vis, float("-inf")).topk(n_rel).indices] = True
        self.relevant = rel
        self.cache = out.cache()
        self.prev = {c: v.clone() for c, v in images.items()}
        self.last_reuse = reuse_mask
        reused = int(reuse_mask.sum())
        # the expert and language head see every token's K/V (reused ones from the cache): tokens_kept = n
        return out, {"tokens_kept": n, "vision_tokens_total": n_vis, "tokens_reused": reused,
                           "vision_tokens_recomputed": n_vis - reused, "static_tokens": n_static}
