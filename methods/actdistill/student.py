"""ActDistill's modules on top of the reference VLA anatomy (harness/anatomy.py):

- :class:`Router` — one gate per layer from pooled (mean and max) vision and language input embeddings
  (Linear -> router_dim + LayerNorm per modality, concatenated, one logit per layer), as in the paper's code
  (``VisionLanguageConcatRouter``). A layer is the pi0-style pair backbone block i + action-expert block i.
- :func:`gated_pass` — the training forward: every layer computed, its output blended with its input by a
  soft (or straight-through hard) gate, with the action expert run on one or more token streams beside the
  backbone. With gates in {0, 1} it equals the inference path (anatomy ``skip``), which is tested.
- :class:`SemanticHead` / :class:`Encapsulation` — the training-only graph encapsulation: per layer a kNN
  graph (k = 8) over the layer's tokens, 2 graph-attention layers, attention pooling, projection to the
  semantic vector (512), and an action probe MLP (512 -> 256 -> action). Never part of the deployed student.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.anatomy import PrefixState
from methods.reference.model import ReferenceVLA, _beta15, sinusoidal


# --------------------------------------------------------------------------------------------------
# router
# --------------------------------------------------------------------------------------------------
def _masked_mean_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, n, r) -> (B, 2r): mean and max over the valid tokens."""
    if mask is None:
        return torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=-1)
    m = mask[..., None].to(x.dtype)
    mean = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
    mx = x.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    return torch.cat([mean, mx], dim=-1)


class Router(nn.Module):
    """Gate logits (B, n_layers) from the prefix embeddings before block 0.

    ``static=True`` (ablation): the logits are a fixed +-``init_logit`` pattern (a buffer), independent of the
    input and not trained — the same budget with fixed blocks.
    """

    def __init__(self, width: int, n_layers: int, router_dim: int = 512, dropout: float = 0.1,
                 static: bool = False):
        super().__init__()
        self.n_layers, self.static = n_layers, static
        self.visual_proj, self.language_proj = nn.Linear(width, router_dim), nn.Linear(width, router_dim)
        self.visual_norm, self.language_norm = nn.LayerNorm(router_dim), nn.LayerNorm(router_dim)
        self.gate = nn.Linear(4 * router_dim, n_layers)  # = n_layers separate Linear(4r, 1), as in the paper code
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.register_buffer("static_logits", torch.zeros(n_layers))

    def init_bias(self, keep: torch.Tensor, logit: float) -> None:
        """keep: (n_layers,) bool. Gate bias +logit on kept layers, -logit on the others (also the static mask)."""
        b = torch.where(keep.bool(), torch.full_like(self.gate.bias, logit), torch.full_like(self.gate.bias, -logit))
        with torch.no_grad():
            self.gate.bias.copy_(b)
            self.static_logits.copy_(b)

    def forward(self, state: PrefixState) -> torch.Tensor:
        b = state.x.shape[0]
        if self.static:
            return self.static_logits[None].expand(b, -1)
        sp = state.spans
        x = state.x
        vis = torch.cat([x[:, s:e] for s, e in sp.vision.values()], dim=1)
        l0, l1 = sp.language
        lang = x[:, l0:l1]
        lmask = None if state.valid is None else state.valid[:, l0:l1]
        v = _masked_mean_max(self.visual_norm(self.visual_proj(vis)), None)
        t = _masked_mean_max(self.language_norm(self.language_proj(lang)), lmask)
        return self.gate(self.dropout(torch.cat([v, t], dim=-1)))


def hard_gates(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, L) bool: layer runs iff sigmoid(logit) >= threshold. At least one layer always runs (the most open)."""
    g = torch.sigmoid(logits) >= threshold
    none = ~g.any(dim=1)
    if bool(none.any()):
        g[none, logits[none].argmax(dim=1)] = True
    return g


# --------------------------------------------------------------------------------------------------
# the gated training forward (same math as forward_prefix + run_expert when gates are 0/1)
# --------------------------------------------------------------------------------------------------
def expert_tokens(model: ReferenceVLA, x_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """The expert's input tokens: at (x_t, t) for the flow head (what ``ReferenceVLA.velocity`` builds before the
    blocks); the learned action queries for the regression / discrete heads (``head_output``; x_t gives B only)."""
    if model.cfg.head != "flow":
        return model.expert_pos[None].repeat(x_t.shape[0], 1, 1)
    de = model.cfg.expert_width
    a = model.action_in(x_t)
    te = sinusoidal(t, de).to(a.dtype)[:, None].expand(-1, a.shape[1], -1)
    return model.time_mlp(torch.cat([a, te], dim=-1)) + model.expert_pos


def gated_pass(model: ReferenceVLA, state: PrefixState, gates: torch.Tensor | None, streams: list[torch.Tensor],
               collect: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Run all layers with per-sample gates (B, L) in [0, 1] (None = all open).

    Layer i: x <- x + g_i (block_i(x) - x); every expert stream h <- h + g_i (expert_i(h; K_i, V_i) - h).
    ``collect``: index of the stream whose tokens are appended to the prefix tokens as the layer's graph nodes.
    Returns (final prefix x, final streams, per-layer node features (B, n [+ chunk], d) if collect is not None).
    """
    x = state.x
    mask = state.attn_mask()
    valid = state.valid
    nodes: list[torch.Tensor] = []
    hs = list(streams)
    for i, (blk, eblk) in enumerate(zip(model.blocks, model.expert)):
        g = None if gates is None else gates[:, i].view(-1, 1, 1)
        y, k, v, _ = blk(x, mask)
        x = y if g is None else x + g * (y - x)
        for j, h in enumerate(hs):
            emask = None
            if valid is not None:
                full = torch.cat([valid, torch.ones(valid.shape[0], h.shape[1], dtype=torch.bool, device=h.device)], 1)
                emask = full[:, None, None, :]
            hy, _ = eblk(h, k, v, emask)
            hs[j] = hy if g is None else h + g * (hy - h)
        if collect is not None:
            nodes.append(torch.cat([x, hs[collect]], dim=1) if hs[collect].shape[-1] == x.shape[-1] else x)
    return x, hs, nodes


def node_mask(state: PrefixState, n_extra: int, width_match: bool) -> torch.Tensor | None:
    if state.valid is None:
        return None
    if not width_match:
        return state.valid
    return torch.cat([state.valid, torch.ones(state.valid.shape[0], n_extra, dtype=torch.bool,
                                              device=state.valid.device)], dim=1)


def flow_targets(model: ReferenceVLA, actions: torch.Tensor, gen: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised actions a, noise, t ~ pi0's Beta(1.5, 1), x_t (as ``ReferenceVLA.action_loss``)."""
    a = (actions - model.action_mean) / model.action_std
    noise = torch.randn(a.shape, generator=gen)
    t = 0.001 + 0.999 * _beta15(torch.rand(a.shape[0], generator=gen))
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
    return a, noise, t, x_t


def task_loss(model: ReferenceVLA, h: torch.Tensor, a: torch.Tensor, noise: torch.Tensor | None,
              weights: torch.Tensor) -> torch.Tensor:
    """The teacher's own action loss on the final expert stream h (before expert_norm), per action dimension
    weighted: flow -> MSE of the velocity to (noise - a); regression -> L1 to a; discrete -> CE on the bins."""
    out = model.action_out(model.expert_norm(h))
    head = model.cfg.head
    if head == "flow":
        return (((out - (noise - a)) ** 2) * weights).mean()
    if head == "regression":
        return ((out - a).abs() * weights).mean()
    mc = model.cfg
    logits = out.view(out.shape[0], mc.chunk, mc.action_dim, mc.n_bins)
    centers = model.bin_centers()
    target = torch.bucketize(a.clamp(-3, 3), (centers[1:] + centers[:-1]) / 2)
    ce = F.cross_entropy(logits.reshape(-1, mc.n_bins), target.reshape(-1), reduction="none")
    return (ce.view(out.shape[0], mc.chunk, mc.action_dim) * weights).mean()


# --------------------------------------------------------------------------------------------------
# graph-structured encapsulation (training only)
# --------------------------------------------------------------------------------------------------
class GATLayer(nn.Module):
    """Multi-head graph attention over each node's k nearest neighbours (heads averaged, as concat=False in the
    paper code); the attention logits are added to the log of the kNN affinity prior."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dim, self.dropout = heads, dim, dropout
        self.lin = nn.Linear(dim, heads * dim, bias=False)
        self.att_self = nn.Parameter(torch.empty(heads, dim))
        self.att_nbr = nn.Parameter(torch.empty(heads, dim))
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_self)
        nn.init.xavier_uniform_(self.att_nbr)

    def forward(self, h: torch.Tensor, idx: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        k = idx.shape[-1]
        z = self.lin(h).view(b, n, self.heads, self.dim)
        s_self = (z * self.att_self).sum(-1)  # (B, n, H)
        s_nbr = (z * self.att_nbr).sum(-1)  # (B, n, H)
        s_nbr = torch.gather(s_nbr, 1, idx.reshape(b, n * k, 1).expand(-1, -1, self.heads)).view(b, n, k, self.heads)
        e = F.leaky_relu(s_self[:, :, None] + s_nbr, 0.2)  # (B, n, k, H)
        w = torch.softmax(e + log_prior[..., None], dim=2)
        dense = h.new_zeros(b, n, n, self.heads).scatter(2, idx[..., None].expand(-1, -1, -1, self.heads), w)
        out = dense.permute(0, 3, 1, 2) @ z.permute(0, 2, 1, 3)  # (B, H, n, D): sum over the k neighbours
        return F.dropout(out.mean(dim=1), self.dropout, self.training)


class SemanticHead(nn.Module):
    """Tokens of one layer (B, n, d) -> semantic vector (B, semantic_dim)."""

    def __init__(self, width: int, semantic_dim: int, gat_dim: int, heads: int, layers: int, k: int, dropout: float):
        super().__init__()
        self.k = k
        self.inp = nn.Linear(width, gat_dim) if gat_dim != width else nn.Identity()
        self.phi, self.psi = nn.Linear(gat_dim, gat_dim, bias=False), nn.Linear(gat_dim, gat_dim, bias=False)
        self.gat = nn.ModuleList(GATLayer(gat_dim, heads, dropout) for _ in range(layers))
        self.pool = nn.Linear(gat_dim, 1, bias=False)
        self.proj = nn.Sequential(nn.Linear(gat_dim, gat_dim // 2), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(gat_dim // 2, semantic_dim))

    def graph(self, h: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """kNN by learned affinity phi(h_i) . psi(h_j) (self excluded, padded tokens never neighbours)."""
        b, n, d = h.shape
        s = self.phi(h) @ self.psi(h).transpose(1, 2) / math.sqrt(d)
        s = s.masked_fill(torch.eye(n, dtype=torch.bool, device=h.device), float("-inf"))
        if mask is not None:
            s = s.masked_fill(~mask[:, None, :], float("-inf"))
        k = min(self.k, n - 1)
        top, idx = s.topk(k, dim=-1)
        return idx, torch.log_softmax(top, dim=-1)  # normalised affinity of the k edges (the prior)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(h)
        idx, log_prior = self.graph(h, mask)
        for layer in self.gat:
            h = F.relu(layer(h, idx, log_prior))
        score = self.pool(h).squeeze(-1)
        if mask is not None:
            score = score.masked_fill(~mask, float("-inf"))
        pooled = (torch.softmax(score, dim=1)[..., None] * h).sum(dim=1)
        return self.proj(pooled)


class Encapsulation(nn.Module):
    """Per layer: a semantic head and an action probe (semantic_dim -> probe_hidden -> action_dim)."""

    def __init__(self, n_layers: int, width: int, action_dim: int, cfg: Any):
        super().__init__()
        gd = cfg.gat_dim or width
        self.heads = nn.ModuleList(SemanticHead(width, cfg.semantic_dim, gd, cfg.gat_heads, cfg.gat_layers, cfg.knn_k,
                                                cfg.head_dropout) for _ in range(n_layers))
        self.probes = nn.ModuleList(nn.Sequential(nn.Linear(cfg.semantic_dim, cfg.probe_hidden), nn.ReLU(),
                                                  nn.Dropout(cfg.head_dropout), nn.Linear(cfg.probe_hidden, action_dim))
                                    for _ in range(n_layers))

    def forward(self, nodes: list[torch.Tensor], mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        sem = torch.stack([hd(x, mask) for hd, x in zip(self.heads, nodes)])  # (L, B, S)
        act = torch.stack([pr(s) for pr, s in zip(self.probes, sem)])  # (L, B, A)
        return sem, act


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------
def layer_weights(n_layers: int, gamma: float, normalize: bool) -> torch.Tensor:
    if n_layers == 1:
        return torch.ones(1)
    w = torch.tensor([(l / (n_layers - 1)) ** gamma for l in range(n_layers)])
    return w / w.mean() if normalize else w


def relational_mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE between the batch's pairwise cosine-similarity matrices (paper code: compute_struct_loss)."""
    ms = F.cosine_similarity(s[:, None], s[None], dim=-1)
    mt = F.cosine_similarity(t[:, None], t[None], dim=-1)
    return F.mse_loss(ms, mt)


def graph_loss(sem_s: torch.Tensor, act_s: torch.Tensor, sem_t: torch.Tensor, act_t: torch.Tensor,
               a_gt: torch.Tensor, w: torch.Tensor, alpha: float, beta: float, eta: float
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """sum_l w_l [alpha(1 - cos) + alpha*eta*relMSE + beta(MSE gt + MSE teacher + MSE previous layer)]."""
    total = sem_s.new_zeros(())
    parts = {"align": 0.0, "rel": 0.0, "act": 0.0}
    prev = torch.zeros_like(act_s[0])
    for l in range(sem_s.shape[0]):
        align = (1 - F.cosine_similarity(sem_s[l], sem_t[l], dim=-1)).mean()
        rel = relational_mse(sem_s[l], sem_t[l])
        act = F.mse_loss(act_s[l], a_gt) + F.mse_loss(act_s[l], act_t[l]) + F.mse_loss(act_s[l], prev.detach())
        prev = act_s[l]
        total = total + w[l] * (alpha * align + alpha * eta * rel + beta * act)
        parts["align"] += float(align) / sem_s.shape[0]
        parts["rel"] += float(rel) / sem_s.shape[0]
        parts["act"] += float(act) / sem_s.shape[0]
    return total, parts


def balance_loss(soft: torch.Tensor, budget: float) -> torch.Tensor:
    """Per sample (number of layers open - budget * L)^2 / L = L * (fraction open - budget)^2, batch mean.

    Scaled by L (relative to the squared fraction) so that the pull on each gate does not shrink with depth."""
    L = soft.shape[1]
    return (L * (soft.mean(dim=1) - budget) ** 2).mean()


def router_balance_loss(soft: torch.Tensor, budget: float, threshold: float = 0.5, on: str = "hard") -> torch.Tensor:
    """The balance loss on what runs at inference (``on="hard"``: the thresholded gates, gradients straight-through
    to the sigmoids) or on the soft sigmoids (``on="soft"``, the paper code). The soft mean can sit exactly on the
    budget while gates just above the threshold keep one more layer running (LIBERO-Object, session 5: soft 0.45,
    hard 0.50); counting the hard gates pulls every gate down until the executed count meets the budget."""
    if on == "hard":
        soft = (soft >= threshold).to(soft.dtype) + soft - soft.detach()
    elif on != "soft":
        raise ValueError(f"balance on {on!r}: expected 'hard' or 'soft'")
    return balance_loss(soft, budget)
