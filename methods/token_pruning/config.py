"""Configs of the training-free token-pruning / caching baselines (one dataclass per registered method).

``keep_ratio`` is always a share of the *vision* tokens (language and proprio tokens are never pruned):
FastV / random: share kept after block ``prune_after``; SparseVLM: the mean share processed per layer after its
first pruning layer (the same per-layer budget as FastV at the same ratio); VLA-Cache: the minimum share of
vision tokens recomputed every step (at most ``1 - keep_ratio`` reuse the previous step's keys/values).
``keep_ratio = 1.0`` runs the teacher's exact computation (no scoring, no pruning).
"""
from dataclasses import dataclass, field

from harness.interfaces import MethodConfig


@dataclass
class FastVConfig(MethodConfig):
    keep_ratio: float = 0.5  # FastV's R = 50 % dropped
    prune_after: int = 2  # FastV's K: prune after this block (0-based), later blocks see the kept tokens
    score_from: str = "last"  # whose attention ranks vision tokens: last (FastV: the last token) | language | all


@dataclass
class SparseVLMConfig(MethodConfig):
    keep_ratio: float = 0.5  # mean share of vision tokens per layer after the first pruning layer
    prune_layers: list[int] = field(default_factory=lambda: [2, 6, 10])  # progressive stages (after these blocks)
    rater_select: bool = True  # SparseVLM: only text tokens with above-mean attention to vision rate tokens


@dataclass
class VLACacheConfig(MethodConfig):
    keep_ratio: float = 0.5  # at least this share of vision tokens is recomputed every step
    sim_threshold: float = 0.996  # a patch is static when its cosine similarity to the previous frame >= this
    relevant_ratio: float = 0.25  # share of vision tokens with the top text->vision attention: always recomputed
    attn_layer: int = -1  # layer whose text->vision attention decides relevance; -1 = the middle layer


@dataclass
class RandomPruneConfig(MethodConfig):
    keep_ratio: float = 0.5  # share of vision tokens kept (uniformly at random) after block prune_after
    prune_after: int = 2  # the same K as FastV
