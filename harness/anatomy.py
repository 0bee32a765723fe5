"""Model anatomy: the interface compression methods operate on (layer dropping, block skipping, token
pruning, attention read-out, key/value reuse across control steps).

A VLA exposes (see docs/anatomy.md):
- token spans of its prefix: vision (per camera), language, proprio — :class:`TokenSpans`;
- an ordered list of ``n_layers`` layers; layer i = backbone block i (+ action-expert block i in pi0-style
  models, which attends to the backbone's keys/values of layer i). ``skip`` sets of layer indices are not
  computed at all (not multiplied by zero), so FLOP counts drop by exactly the skipped blocks' cost;
- hooks between backbone blocks that may return the positions of tokens to keep (token pruning); language
  and proprio tokens are never dropped (:func:`check_keep`);
- attention maps on request (``need_attn``: computed explicitly only then; the default path is SDPA);
- per-layer keys/values of every token (:class:`KVCache`) that the next control step may reuse token by
  token (VLA-Cache).

The state passed between blocks is a :class:`PrefixState`; its ``ids`` map current token positions to the
original ones, so a method always knows which camera patch / word a surviving token is.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

from harness.interfaces import ActionChunk, Policy, Task


@dataclass(frozen=True)
class TokenSpans:
    """Half-open [start, end) ranges of the ORIGINAL prefix positions."""

    vision: dict[str, tuple[int, int]]  # camera -> span
    language: tuple[int, int]
    proprio: tuple[int, int]

    @property
    def n_tokens(self) -> int:
        return max(self.proprio[1], self.language[1], *(e for _, e in self.vision.values()))

    def vision_mask(self, n: int | None = None, device: Any = None) -> torch.Tensor:
        """(n_tokens,) bool, True on vision tokens."""
        m = torch.zeros(n or self.n_tokens, dtype=torch.bool, device=device)
        for s, e in self.vision.values():
            m[s:e] = True
        return m

    def protected_mask(self, n: int | None = None, device: Any = None) -> torch.Tensor:
        """(n_tokens,) bool, True on language and proprio tokens (never pruned)."""
        m = torch.zeros(n or self.n_tokens, dtype=torch.bool, device=device)
        m[self.language[0]:self.language[1]] = True
        m[self.proprio[0]:self.proprio[1]] = True
        return m

    def to_dict(self) -> dict[str, Any]:
        return {"vision": {k: list(v) for k, v in self.vision.items()}, "language": list(self.language),
                "proprio": list(self.proprio)}


@dataclass
class PrefixState:
    """Hidden states of the prefix between blocks, with everything computed so far.

    ``x`` (B, n, d) current tokens; ``ids`` (B, n) their original positions; ``valid`` (B, n) bool key mask
    (None = all valid; used for padded text in training batches); ``kv[i]`` keys/values (B, H, n_i, hd) of layer
    i; ``kv_valid[i]`` the key mask at layer i; ``attn[i]`` attention maps (B, H, n_i, n_i) where requested.
    """

    x: torch.Tensor
    ids: torch.Tensor
    spans: TokenSpans
    valid: torch.Tensor | None = None
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    kv_valid: dict[int, torch.Tensor | None] = field(default_factory=dict)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)

    def attn_mask(self) -> torch.Tensor | None:
        return None if self.valid is None else self.valid[:, None, None, :]

    def select(self, keep: torch.Tensor) -> "PrefixState":
        """Keep positions ``keep`` (B, n_keep) of the current tokens (the per-layer record is kept)."""
        idx = keep[..., None].expand(-1, -1, self.x.shape[-1])
        valid = None if self.valid is None else torch.gather(self.valid, 1, keep)
        return PrefixState(torch.gather(self.x, 1, idx), torch.gather(self.ids, 1, keep), self.spans, valid,
                           self.kv, self.kv_valid, self.attn)

    def cache(self) -> "KVCache":
        return KVCache({i: (k.detach(), v.detach()) for i, (k, v) in self.kv.items()}, self.spans)

    @property
    def n_tokens(self) -> int:
        return self.x.shape[1]

    def is_vision(self) -> torch.Tensor:
        """(B, n) bool: current tokens that are vision tokens."""
        return self.spans.vision_mask(device=self.ids.device)[self.ids]


@dataclass
class KVCache:
    """Per-layer keys/values of all prefix tokens from one control step (input to the next one's reuse)."""

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]
    spans: TokenSpans


def check_keep(keep: torch.Tensor, state: PrefixState) -> None:
    """Raise if a pruning hook's keep positions drop a language/proprio token or are not sorted and unique."""
    if keep.dim() != 2 or keep.shape[0] != state.x.shape[0]:
        raise ValueError(f"keep must be (batch, n_keep) positions, got shape {tuple(keep.shape)}")
    protected = ~state.is_vision()
    kept = torch.zeros_like(protected)
    kept.scatter_(1, keep, True)
    if bool((protected & ~kept).any()):
        raise ValueError("a pruning hook dropped language or proprio tokens; only vision tokens may be pruned")
    if keep.shape[1] > 1 and not bool((keep[:, 1:] > keep[:, :-1]).all()):
        raise ValueError("keep positions must be strictly increasing (token order is preserved)")


class PrefixLayers:
    """Mixin: :meth:`VLAAnatomy.forward_prefix` for a model that defines ``n_layers``,
    ``_prefix_layer(i, x, pos, mask, need_attn, fill=None) -> (x, K, V, attn)`` (``pos``: original positions of
    ``x``; ``fill = (K, V, slots)``: the layer's cached K/V of all tokens, ``x``'s written at ``slots``) and
    ``_prefix_mask(state, k_ids, k_valid)`` (the attention mask of ``state``'s tokens over keys at original
    positions ``k_ids`` (B, n_k) with key mask ``k_valid``)."""

    def forward_prefix(self, state: PrefixState, *, skip: frozenset[int] | set[int] = frozenset(),
                       hooks: dict[int, Callable[[PrefixState], torch.Tensor | None]] | None = None,
                       need_attn: bool | set[int] = False, reuse: KVCache | None = None,
                       reuse_mask: torch.Tensor | None = None) -> PrefixState:
        """Run the layers not in ``skip``; after layer i, ``hooks[i](state)`` may return keep positions
        (B, n_keep) into the current tokens (language/proprio must be kept; see :func:`check_keep`).

        ``reuse``/``reuse_mask`` (VLA-Cache): ``reuse_mask`` (n_tokens,) bool marks original tokens whose
        keys/values are taken from ``reuse`` (the previous step's cache) at every layer; only the other
        tokens are computed. Not combinable with pruning hooks (the cache holds every token).
        """
        hooks = hooks or {}
        all_ids = torch.arange(state.n_tokens, device=state.x.device)[None].expand(state.x.shape[0], -1)
        if reuse is not None:
            if hooks:
                raise ValueError("KV reuse and token-pruning hooks cannot be combined")
            if reuse_mask is None:
                raise ValueError("reuse needs reuse_mask (True = reuse the cached K/V of that token)")
            pos = torch.nonzero(~reuse_mask.bool().to(state.x.device), as_tuple=False).flatten()
            state = state.select(pos[None].expand(state.x.shape[0], -1))
        for i in range(self.n_layers):
            if i in skip:
                continue
            want = need_attn if isinstance(need_attn, bool) else (i in need_attn)
            fill = None
            if reuse is not None:
                kc, vc = reuse.layers[i]
                fill = (kc, vc, state.ids[0])
                mask = self._prefix_mask(state, all_ids, None)
            else:
                mask = self._prefix_mask(state, state.ids, state.valid)
            x, k, v, w = self._prefix_layer(i, state.x, state.ids, mask, want, fill=fill)
            state.x = x
            state.kv[i] = (k, v)
            state.kv_valid[i] = state.valid if reuse is None else None
            if w is not None:
                state.attn[i] = w
            if i in hooks:
                keep = hooks[i](state)
                if keep is not None:
                    check_keep(keep, state)
                    state = state.select(keep)
        return state


def keep_top_vision(state: PrefixState, scores: torch.Tensor, keep_ratio: float | None = None,
                    n_keep_vision: int | None = None) -> torch.Tensor:
    """Keep positions: every non-vision token plus the highest-``scores`` (B, n) vision tokens.

    ``keep_ratio`` is relative to the vision tokens currently present; 1.0 keeps everything (identity).
    """
    b, n = state.ids.shape
    vis = state.is_vision()
    n_vis = int(vis[0].sum())
    k = n_keep_vision if n_keep_vision is not None else int(round(n_vis * float(keep_ratio if keep_ratio is not None else 1.0)))
    k = max(0, min(n_vis, k))
    s = scores.masked_fill(~vis, float("-inf"))
    top = s.topk(k, dim=1).indices if k else torch.zeros(b, 0, dtype=torch.long, device=scores.device)
    keep = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    keep[~vis] = True
    keep.scatter_(1, top, True)
    return torch.stack([torch.nonzero(row, as_tuple=False).flatten() for row in keep])


def attention_received(state: PrefixState, layer: int, from_positions: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n) mean attention each current token receives at ``layer`` (from ``from_positions``, default: the
    last token — FastV), averaged over heads. Needs ``need_attn`` for that layer."""
    if layer not in state.attn:
        raise KeyError(f"no attention maps for layer {layer}; run forward_prefix with need_attn={{{layer}}}")
    w = state.attn[layer].mean(dim=1)  # (B, n, n)
    if from_positions is None:
        return w[:, -1]
    return w[:, from_positions].mean(dim=1)


@runtime_checkable
class VLAAnatomy(Protocol):
    """What a compression method may call on a VLA (implemented by methods.reference.model.ReferenceVLA)."""

    @property
    def n_layers(self) -> int: ...

    def layer_modules(self, i: int) -> list[torch.nn.Module]:
        """The modules computed for layer i (backbone block, expert block): for FLOP accounting/copying."""

    def embed_prefix(self, images: dict[str, torch.Tensor], text: torch.Tensor, proprio: torch.Tensor,
                     text_mask: torch.Tensor | None = None) -> PrefixState: ...

    def forward_prefix(self, state: PrefixState, *, skip: frozenset[int] | set[int] = frozenset(),
                       hooks: dict[int, Callable[[PrefixState], torch.Tensor | None]] | None = None,
                       need_attn: bool | set[int] = False, reuse: KVCache | None = None,
                       reuse_mask: torch.Tensor | None = None) -> PrefixState: ...

    def sample_actions(self, state: PrefixState, noise: torch.Tensor | None = None, *,
                       skip: frozenset[int] | set[int] = frozenset(), steps: int | None = None,
                       need_attn: bool = False, attn_out: dict[int, torch.Tensor] | None = None) -> torch.Tensor: ...


class AnatomyPolicy(Policy):
    """A :class:`VLAAnatomy` model as a Policy, with the helpers compression methods use (``model``, ``inputs(obs)``,
    ``noise()``, ``postprocess(actions)``, ``n_execute``, ``flow_steps``, ``generate``). Subclasses define
    ``encode_text``, ``inputs``, ``noise``, ``postprocess`` and, when ``generate``, ``commentary``."""

    generate = False  # commentary from a language head

    def __init__(self, model: Any, cfg: Any, *, n_execute: int, flow_steps: int | None):
        self.model, self.cfg = model.eval(), cfg
        self.n_execute = max(1, n_execute)
        self.actions_per_call = float(self.n_execute)
        self.flow_steps = flow_steps
        self.calls = 0
        self.gen = torch.Generator().manual_seed(0)
        self._text: tuple[str, torch.Tensor] | None = None

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def reset(self, task: Task, seed: int) -> None:
        self.task, self.calls = task, 0
        self.gen = torch.Generator().manual_seed(int(seed))

    @abstractmethod
    def encode_text(self, instruction: str) -> torch.Tensor:
        """(1, T) token ids of ``instruction``."""

    @abstractmethod
    def inputs(self, obs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """obs -> (images {cam: uint8 (1,H,W,3)}, text ids (1,T), proprio (1,P)) for ``model.embed_prefix``."""

    @abstractmethod
    def noise(self) -> torch.Tensor | None: ...

    @abstractmethod
    def postprocess(self, actions: torch.Tensor) -> np.ndarray:
        """Model actions (1, chunk, A) -> the environment's actions (chunk, A)."""

    def commentary(self, state: PrefixState) -> str:
        raise NotImplementedError("generate=True needs commentary()")

    def text_ids(self, instruction: str) -> torch.Tensor:
        """(1, T) token ids of ``instruction`` (the last one is cached)."""
        if self._text is None or self._text[0] != instruction:
            self._text = (instruction, self.encode_text(instruction))
        return self._text[1]

    def infer(self, obs: dict[str, Any]) -> ActionChunk:
        self.calls += 1
        m = self.model
        with torch.inference_mode():
            state = m.forward_prefix(m.embed_prefix(*self.inputs(obs)))
            actions = m.sample_actions(state, self.noise(), steps=self.flow_steps)
            extras: dict[str, Any] = {"tokens_kept": int(state.n_tokens), "blocks_executed": m.n_layers}
            if self.generate:
                extras["text"] = self.commentary(state)
        return ActionChunk(self.postprocess(actions), n_execute=self.n_execute, extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        return {"infer_calls": self.calls}


def frame_similarity(prev: torch.Tensor, cur: torch.Tensor, grid: int) -> torch.Tensor:
    """Cosine similarity per grid cell between two uint8 images (H,W,3) -> (grid*grid,) (VLA-Cache's test)."""
    def cells(img: torch.Tensor) -> torch.Tensor:
        x = img.float().permute(2, 0, 1)[None]
        x = torch.nn.functional.adaptive_avg_pool2d(x, (grid * 4, grid * 4))  # 4x4 samples per cell
        x = x.view(3, grid, 4, grid, 4).permute(1, 3, 0, 2, 4).reshape(grid * grid, -1)
        return x

    a, b = cells(prev), cells(cur)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)
