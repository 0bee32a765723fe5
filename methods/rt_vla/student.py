"""A compact vision(+command) student for real-time driving: RT-VLA's student and LatentVLA's deployed network.

    images -> small conv stem -> 4x4 grid tokens per camera ┐
    instruction ids -> mean word embedding (one token)       ├-> `fuse_layers` transformer blocks -> pooled
    proprio -> one token                                     ┘
    pooled -> MLP -> action chunk (regression)
    tokens -> optional commentary decoder (causal self-attention + cross-attention to the tokens, greedy)

The instruction enters as one pooled "command" token (the route command a driving stack receives), not through
a language model: the *vision-only* mode never runs the decoder. All attention uses
``F.scaled_dot_product_attention`` so FLOP counts see it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PAD, UNK, BOS, EOS = 0, 1, 2, 3


@dataclass
class StudentConfig:
    cameras: list[str] = field(default_factory=lambda: ["topdown"])
    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 48])
    grid: int = 4
    width: int = 64
    heads: int = 4
    fuse_layers: int = 2
    proprio_dim: int = 6
    action_dim: int = 16
    chunk: int = 8
    vocab_size: int = 64  # instruction vocabulary (the teacher's tokenizer)
    lang_head: bool = False
    lang_vocab_size: int = 64
    lang_layers: int = 1
    lang_max_len: int = 16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Attn(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.h, self.hd = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.h, self.hd).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.h, self.hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.o(a.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attn(dim, heads)
        self.cross = _Attn(dim, heads) if cross else None
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, causal=causal)
        if self.cross is not None and ctx is not None:
            x = x + self.cross(self.n2(x), ctx)
        return x + self.mlp(self.n3(x))


class CompactStudent(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(4, c), nn.SiLU()]
            c_in = c
        self.stem = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(cfg.grid)
        self.vis_proj = nn.Linear(c_in, cfg.width)
        self.vis_pos = nn.Parameter(torch.randn(len(cfg.cameras), cfg.grid * cfg.grid, cfg.width) * 0.02)
        self.words = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=PAD)
        self.proprio_in = nn.Linear(cfg.proprio_dim, cfg.width)
        self.type_emb = nn.Parameter(torch.zeros(2, cfg.width))
        self.blocks = nn.ModuleList(_Block(cfg.width, cfg.heads) for _ in range(cfg.fuse_layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.action_head = nn.Sequential(nn.Linear(2 * cfg.width, 256), nn.GELU(),
                                         nn.Linear(256, cfg.chunk * cfg.action_dim))
        if cfg.lang_head:
            self.lang_embed = nn.Embedding(cfg.lang_vocab_size, cfg.width)
            self.lang_pos = nn.Parameter(torch.randn(cfg.lang_max_len + 2, cfg.width) * 0.02)
            self.lang_blocks = nn.ModuleList(_Block(cfg.width, cfg.heads, cross=True) for _ in range(cfg.lang_layers))
            self.lang_norm = nn.LayerNorm(cfg.width)
            self.lang_out = nn.Linear(cfg.width, cfg.lang_vocab_size)
        for name, buf in (("proprio_mean", cfg.proprio_dim), ("action_mean", cfg.action_dim)):
            self.register_buffer(name, torch.zeros(buf))
            self.register_buffer(name.replace("mean", "std"), torch.ones(buf))

    # ----- encoder -----
    def encode(self, images: dict[str, torch.Tensor], text: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """images {cam: (B,H,W,3) uint8 or float 0-255}; text (B,T) ids; proprio (B,P) raw -> tokens (B, n, width)."""
        toks = []
        for ci, cam in enumerate(self.cfg.cameras):
            x = images[cam].float().permute(0, 3, 1, 2) / 255.0
            if x.shape[-1] != self.cfg.image_size:
                x = F.interpolate(x, size=(self.cfg.image_size, self.cfg.image_size), mode="area")
            f = self.pool(self.stem(x)).flatten(2).transpose(1, 2)  # (B, g*g, C)
            toks.append(self.vis_proj(f) + self.vis_pos[ci])
        mask = (text != PAD).float()
        cmd = (self.words(text) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        p = (proprio.float() - self.proprio_mean) / self.proprio_std
        toks.append((cmd + self.type_emb[0])[:, None])
        toks.append((self.proprio_in(p) + self.type_emb[1])[:, None])
        x = torch.cat(toks, dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    @staticmethod
    def pooled(tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1)

    def actions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised -> env units, (B, chunk, action_dim)."""
        a = self.action_head(self.pooled(tokens)).view(-1, self.cfg.chunk, self.cfg.action_dim)
        return a * self.action_std + self.action_mean

    def normalised_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.action_head(self.pooled(tokens)).view(-1, self.cfg.chunk, self.cfg.action_dim)

    # ----- commentary decoder -----
    def lang_logits(self, tokens: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: seq (B, L) starting with BOS -> logits (B, L, vocab)."""
        h = self.lang_embed(seq) + self.lang_pos[: seq.shape[1]]
        for blk in self.lang_blocks:
            h = blk(h, tokens, causal=True)
        return self.lang_out(self.lang_norm(h))

    def generate(self, tokens: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
        """Greedy commentary (batch), stops at EOS."""
        max_len = min(max_len or self.cfg.lang_max_len + 1, self.cfg.lang_max_len + 1)
        b = tokens.shape[0]
        seq = torch.full((b, 1), BOS, dtype=torch.long, device=tokens.device)
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool)
        for _ in range(max_len):
            nxt = self.lang_logits(tokens, seq)[:, -1].argmax(-1)
            for i in range(b):
                if not done[i]:
                    out[i].append(int(nxt[i]))
            done |= nxt.cpu() == EOS
            if bool(done.all()):
                break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        return out

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed at inference (the language decoder only if configured)."""
        return {k: v for k, v in self.state_dict().items()}


def token_metrics(pred: list[list[int]], ref: list[list[int]]) -> dict[str, float]:
    """Commentary quality vs a reference: token accuracy (position-wise over the reference incl. EOS), exact
    match, and ROUGE-L F1 over words (EOS excluded)."""
    def strip(s: list[int]) -> list[int]:
        return s[: s.index(EOS)] if EOS in s else s

    acc_hits = acc_total = exact = 0
    rouge = []
    for p, r in zip(pred, ref):
        r_full = strip(r) + [EOS]
        p_full = strip(p) + [EOS]
        acc_total += len(r_full)
        acc_hits += sum(1 for i, t in enumerate(r_full) if i < len(p_full) and p_full[i] == t)
        exact += int(strip(p) == strip(r))
        a, b = strip(p), strip(r)
        if not a or not b:
            rouge.append(float(a == b))
            continue
        dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], dp[i + 1][j])
        lcs = dp[-1][-1]
        prec, rec = lcs / len(a), lcs / len(b)
        rouge.append(0.0 if lcs == 0 else 2 * prec * rec / (prec + rec))
    n = max(len(pred), 1)
    return {"token_accuracy": acc_hits / max(acc_total, 1), "exact_match": exact / n,
            "rouge_l_f1": float(sum(rouge) / n), "n": len(pred)}
