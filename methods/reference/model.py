"""The reference VLA family: a small pi0-style model that runs on one CPU core, with the model anatomy exposed.

Prefix (bidirectional):  [vision tokens per camera | instruction tokens | proprio token]
    vision: a conv stem per observation whose feature-map cells are the tokens (shared weights across
            cameras, a learned position + camera embedding per cell);
    language: a word-level tokenizer trained in code on the suite's instructions (saved with the checkpoint);
    proprio: one token from a linear projection of the normalised proprio vector.
Backbone: ``depth`` (18) pre-norm transformer blocks over the prefix.
Action head (``head``):
    ``flow``       — pi0-style flow-matching action expert: its own ``depth`` blocks; action tokens of layer l
                     attend to the backbone's keys/values of layer l plus to each other; Euler integration
                     with ``flow_steps`` steps from noise (t=1) to actions (t=0);
    ``regression`` — the same expert run once on learned query tokens, L1 on actions (OpenVLA-OFT-like);
    ``discrete``   — the same, with ``n_bins`` logits per action dimension (OpenVLA-style 256-bin tokens,
                     decoded in parallel rather than autoregressively).
Language head (optional, driving): a small causal decoder over commentary tokens that attends to the last
backbone layer's keys/values and generates greedily (SimLingo-style commentary).

All attention goes through ``F.scaled_dot_product_attention`` unless attention maps are requested, so the
FLOP counter sees it. Compression methods use this model through :mod:`harness.anatomy`.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.anatomy import PrefixLayers, PrefixState, TokenSpans

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Architecture sizes (JSON-able; saved in the checkpoint manifest)."""

    cameras: list[str] = field(default_factory=lambda: ["top"])
    image_size: int = 64  # every camera image is resized to this square before the stem
    stem_channels: list[int] = field(default_factory=lambda: [32, 64])  # stride-2 convs before the token conv
    grid: int = 8  # tokens per camera = grid * grid (adaptive average pool of the stem's output)
    # spatial-softmax keypoints per camera, read off the stem's last stride-2 feature map before pooling (sub-cell
    # xy precision the pooled grid lacks); packed kp_per_token to a token. 0 = none (checkpoints before 2026-11-23 s3)
    keypoints: int = 0
    kp_per_token: int = 4
    proprio_dim: int = 2
    action_dim: int = 2
    chunk: int = 8  # actions per chunk
    width: int = 96
    heads: int = 4
    depth: int = 18
    mlp_ratio: int = 4
    expert_width: int = 96
    expert_mlp_ratio: int = 4
    head: str = "flow"  # flow | regression | discrete
    flow_steps: int = 10
    n_bins: int = 256
    vocab_size: int = 64  # instruction tokenizer vocabulary (set from the tokenizer)
    max_text_len: int = 24
    lang_head: bool = False  # commentary decoder (driving)
    lang_vocab_size: int = 64
    lang_layers: int = 2
    lang_max_len: int = 16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# tokenizer (trained in code, saved as JSON with the checkpoint)
# --------------------------------------------------------------------------------------------------
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


class WordTokenizer:
    """Lower-cased word-level tokenizer whose vocabulary is built from the training texts; no download."""

    def __init__(self, vocab: Sequence[str]):
        if list(vocab[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    @classmethod
    def train(cls, texts: Sequence[str]) -> "WordTokenizer":
        seen: dict[str, None] = {}
        for t in texts:
            for w in cls.words(t):
                seen.setdefault(w, None)
        return cls(SPECIALS + sorted(seen))

    def encode(self, text: str, max_len: int, bos: bool = False, eos: bool = False) -> list[int]:
        """At most ``max_len`` word ids, plus BOS/EOS when asked (those are not counted in max_len)."""
        ids = [self.index.get(w, UNK) for w in self.words(text)][:max_len]
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>")
        text = " ".join(out)
        return re.sub(r" ([.,;:!?])", r"\1", text)

    def __len__(self) -> int:
        return len(self.vocab)


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B,H,Lq,D) x (B,H,Lk,D). ``mask``: bool, True = may attend, broadcastable to (B,H,Lq,Lk).

    The default path is SDPA (counted by the FLOP counter); attention maps are computed explicitly only
    when ``need_weights`` (the same FLOPs: QK^T and AV).
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = scores.softmax(dim=-1)
    return w @ v, w


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, ratio * dim), nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class BackboneBlock(nn.Module):
    """Pre-norm self-attention block over prefix tokens; returns its keys/values for the action expert."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_attn: bool = False,
                kv_fill: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``x`` (B, n, dim) -> (x', K, V, attn). ``kv_fill = (K_cached, V_cached, pos)``: the n tokens of ``x``
        are written at positions ``pos`` of the cached keys/values of all tokens (the others are reused)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        if kv_fill is not None:
            kc, vc, pos = kv_fill
            k = kc.index_copy(2, pos, k)
            v = vc.index_copy(2, pos, v)
        a, w = attention(q, k, v, mask, need_attn)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        x = x + self.mlp(self.norm2(x))
        return x, k, v, w


class ExpertBlock(nn.Module):
    """Action-expert block: its tokens attend to the backbone's K/V of the same layer and to themselves."""

    def __init__(self, dim: int, attn_dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads, self.hd, self.attn_dim = heads, attn_dim // heads, attn_dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * attn_dim)
        self.proj = nn.Linear(attn_dim, dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor,
                mask: torch.Tensor | None = None, need_attn: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        if k_prefix.shape[0] != b:  # one prefix shared by a batch of action samples
            k_prefix, v_prefix = k_prefix.expand(b, -1, -1, -1), v_prefix.expand(b, -1, -1, -1)
        k = torch.cat([k_prefix, k], dim=2)
        v = torch.cat([v_prefix, v], dim=2)
        a, w = attention(q, k, v, mask, need_attn)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, self.attn_dim))
        x = x + self.mlp(self.norm2(x))
        return x, w


class ConvStem(nn.Module):
    """Images (B,3,H,W) -> (B, grid*grid [+ keypoints/kp_per_token], width) tokens.

    Stride-2 convs + GroupNorm + GELU, a last stride-2 conv to ``width`` channels, average-pooled to ``grid`` x
    ``grid`` cells (one token each). With ``keypoints`` K > 0, a 1x1 conv on the feature map before the last conv
    gives K heat maps; their spatial softmax's expected (x, y) in [-1, 1] (the feasibility probe's keypoints,
    Levine et al. 2016) are packed ``kp_per_token`` to a token by a linear layer.
    """

    def __init__(self, channels: Sequence[int], width: int, grid: int, keypoints: int = 0, kp_per_token: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8 if c % 8 == 0 else 1, c), nn.GELU()]
            c_in = c
        layers += [nn.Conv2d(c_in, width, 3, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)
        self.grid = grid
        self.keypoints = keypoints
        if keypoints:
            if keypoints % kp_per_token:
                raise ValueError(f"keypoints ({keypoints}) must be a multiple of kp_per_token ({kp_per_token})")
            self.kp_per_token = kp_per_token
            self.kp_conv = nn.Conv2d(c_in, keypoints, 1)
            self.kp_log_temp = nn.Parameter(torch.zeros(()))
            self.kp_proj = nn.Linear(2 * kp_per_token, width)

    @property
    def n_kp_tokens(self) -> int:
        return self.keypoints // self.kp_per_token if self.keypoints else 0

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        f = self.net[:-1](img)
        x = self.net[-1](f)
        if x.shape[-1] != self.grid or x.shape[-2] != self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        tok = x.flatten(2).transpose(1, 2)
        if not self.keypoints:
            return tok
        b, _, h, w = f.shape
        att = (self.kp_conv(f).flatten(2) * self.kp_log_temp.exp()).softmax(-1).view(b, self.keypoints, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=f.device, dtype=att.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=f.device, dtype=att.dtype)
        kp = torch.stack([(att.sum(2) * xs).sum(-1), (att.sum(3) * ys).sum(-1)], dim=-1)  # (B, K, 2)
        kp_tok = self.kp_proj(kp.reshape(b, self.n_kp_tokens, 2 * self.kp_per_token))
        return torch.cat([tok, kp_tok], dim=1)


def sinusoidal(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """pi0's sine-cosine embedding of the flow time t in [0, 1]: (B,) -> (B, dim)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    ang = t[:, None] * (2 * math.pi / period[None])
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def prepare_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,size,size) in [-1, 1] (area resize when the size differs)."""
    x = images.float().div(127.5).sub(1.0).permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


class ReferenceVLA(PrefixLayers, nn.Module):
    """See the module docstring. Implements :class:`harness.anatomy.VLAAnatomy`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, de = cfg.width, cfg.expert_width
        g2 = cfg.grid * cfg.grid
        self.stem = ConvStem(cfg.stem_channels, d, cfg.grid, cfg.keypoints, cfg.kp_per_token)
        self.vis_pos = nn.Parameter(torch.randn(len(cfg.cameras), g2, d) * 0.02)
        if cfg.keypoints:  # separate parameter so grid-only checkpoints warm-start every other tensor
            self.kp_pos = nn.Parameter(torch.randn(len(cfg.cameras), self.stem.n_kp_tokens, d) * 0.02)
        self.tok_embed = nn.Embedding(cfg.vocab_size, d)
        self.txt_pos = nn.Parameter(torch.randn(cfg.max_text_len, d) * 0.02)
        self.proprio_in = nn.Linear(cfg.proprio_dim, d)
        self.blocks = nn.ModuleList(BackboneBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        # action expert (all heads use it; flow adds time conditioning)
        self.expert = nn.ModuleList(ExpertBlock(de, d, cfg.heads, cfg.expert_mlp_ratio) for _ in range(cfg.depth))
        self.expert_pos = nn.Parameter(torch.randn(cfg.chunk, de) * 0.02)
        self.expert_norm = nn.LayerNorm(de)
        if cfg.head == "flow":
            self.action_in = nn.Linear(cfg.action_dim, de)
            self.time_mlp = nn.Sequential(nn.Linear(2 * de, de), nn.SiLU(), nn.Linear(de, de))
            self.action_out = nn.Linear(de, cfg.action_dim)
        elif cfg.head == "regression":
            self.action_out = nn.Linear(de, cfg.action_dim)
        elif cfg.head == "discrete":
            self.action_out = nn.Linear(de, cfg.action_dim * cfg.n_bins)
        else:
            raise ValueError(f"head must be flow | regression | discrete, got {cfg.head!r}")
        if cfg.lang_head:
            self.lang_embed = nn.Embedding(cfg.lang_vocab_size, d)
            self.lang_pos = nn.Parameter(torch.randn(cfg.lang_max_len + 1, d) * 0.02)
            self.lang_blocks = nn.ModuleList(ExpertBlock(d, d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.lang_layers))
            self.lang_norm = nn.LayerNorm(d)
            self.lang_out = nn.Linear(d, cfg.lang_vocab_size)
        # normalisation statistics (set from the demonstrations; saved with the weights)
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("action_std", torch.ones(cfg.action_dim))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def patch_grid(self) -> int:
        """Each camera's span starts with grid x grid patch tokens (row-major); keypoint tokens follow."""
        return self.cfg.grid

    # ----- anatomy: layers -----
    @property
    def n_layers(self) -> int:
        return self.cfg.depth

    def layer_modules(self, i: int) -> list[nn.Module]:
        return [self.blocks[i], self.expert[i]]

    # ----- prefix embedding -----
    def embed_prefix(self, images: dict[str, torch.Tensor], text: torch.Tensor, proprio: torch.Tensor,
                     text_mask: torch.Tensor | None = None) -> PrefixState:
        """images: {cam: uint8 (B,H,W,3)}; text: (B,T) token ids; proprio (B,P) raw. -> state before block 0."""
        cfg = self.cfg
        parts, spans_v = [], {}
        start = 0
        for ci, cam in enumerate(cfg.cameras):
            tok = self.stem(prepare_images(images[cam], cfg.image_size))
            pos = self.vis_pos[ci] if not cfg.keypoints else torch.cat([self.vis_pos[ci], self.kp_pos[ci]])
            tok = tok + pos
            parts.append(tok)
            spans_v[cam] = (start, start + tok.shape[1])
            start += tok.shape[1]
        b, t = text.shape
        parts.append(self.tok_embed(text) + self.txt_pos[:t])
        lang = (start, start + t)
        start += t
        p = (proprio.float() - self.proprio_mean) / self.proprio_std
        parts.append(self.proprio_in(p)[:, None])
        spans = TokenSpans(vision=spans_v, language=lang, proprio=(start, start + 1))
        x = torch.cat(parts, dim=1)
        n = x.shape[1]
        valid = None
        if text_mask is not None and not bool(text_mask.all()):
            valid = torch.ones(b, n, dtype=torch.bool, device=x.device)
            valid[:, lang[0]:lang[1]] = text_mask.bool()
        ids = torch.arange(n, device=x.device).expand(b, n)
        return PrefixState(x=x, ids=ids, spans=spans, valid=valid)

    # ----- backbone (forward_prefix: harness.anatomy.PrefixLayers) -----
    def _prefix_mask(self, state: PrefixState, k_ids: torch.Tensor, k_valid: torch.Tensor | None
                     ) -> torch.Tensor | None:
        """Bidirectional: only padded text keys are masked."""
        return None if k_valid is None else k_valid[:, None, None, :]

    def _prefix_layer(self, i: int, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None, need_attn: bool,
                      fill: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        return self.blocks[i](x, mask, need_attn, fill)

    # ----- action expert -----
    def _expert_mask(self, state: PrefixState, i: int, b: int, n_act: int) -> torch.Tensor | None:
        valid = state.kv_valid.get(i)
        if valid is None:
            return None
        full = torch.cat([valid, torch.ones(valid.shape[0], n_act, dtype=torch.bool, device=valid.device)], dim=1)
        return full[:, None, None, :].expand(b if full.shape[0] == 1 else full.shape[0], 1, 1, -1)

    def run_expert(self, state: PrefixState, h: torch.Tensor, *, skip: frozenset[int] | set[int] = frozenset(),
                   need_attn: bool = False, attn_out: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Expert tokens h (B, chunk, expert_width) through the expert blocks whose layer is not skipped."""
        b, n_act, _ = h.shape
        for i, blk in enumerate(self.expert):
            if i in skip or i not in state.kv:
                continue
            k, v = state.kv[i]
            h, w = blk(h, k, v, self._expert_mask(state, i, b, n_act), need_attn)
            if w is not None and attn_out is not None:
                attn_out[i] = w[..., : k.shape[2]]  # action queries -> prefix keys
        return self.expert_norm(h)

    def velocity(self, state: PrefixState, x_t: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
        """Flow head: predicted velocity u = noise - actions at (x_t, t); both in normalised action units."""
        de = self.cfg.expert_width
        a = self.action_in(x_t)
        te = sinusoidal(t, de).to(a.dtype)[:, None].expand(-1, a.shape[1], -1)
        h = self.time_mlp(torch.cat([a, te], dim=-1)) + self.expert_pos
        return self.action_out(self.run_expert(state, h, **kw))

    def head_output(self, state: PrefixState, b: int, **kw: Any) -> torch.Tensor:
        """Regression: actions (B, chunk, A); discrete: logits (B, chunk, A, n_bins)."""
        h = self.expert_pos[None].repeat(b, 1, 1)  # not a view: FlopCounterMode's module hooks reject param views
        out = self.action_out(self.run_expert(state, h, **kw))
        if self.cfg.head == "discrete":
            out = out.view(b, self.cfg.chunk, self.cfg.action_dim, self.cfg.n_bins)
        return out

    def bin_centers(self) -> torch.Tensor:
        """Discrete head: bins uniform over [-3, 3] normalised units (mean +- 3 std)."""
        n = self.cfg.n_bins
        return torch.linspace(-3.0, 3.0, n, device=self.action_mean.device)

    def sample_actions(self, state: PrefixState, noise: torch.Tensor | None = None, *,
                       skip: frozenset[int] | set[int] = frozenset(), steps: int | None = None,
                       need_attn: bool = False, attn_out: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Actions (B, chunk, A) in the environment's units."""
        cfg = self.cfg
        b = state.x.shape[0]
        if cfg.head == "flow":
            steps = steps or cfg.flow_steps
            x = noise if noise is not None else torch.randn(b, cfg.chunk, cfg.action_dim, device=state.x.device)
            dt = -1.0 / steps
            for s in range(steps):
                t = torch.full((b,), 1.0 + s * dt, device=x.device)
                want = need_attn and s == steps - 1
                x = x + dt * self.velocity(state, x, t, skip=skip, need_attn=want,
                                           attn_out=attn_out if want else None)
            a = x
        elif cfg.head == "regression":
            a = self.head_output(state, b, skip=skip, need_attn=need_attn, attn_out=attn_out)
        else:
            logits = self.head_output(state, b, skip=skip, need_attn=need_attn, attn_out=attn_out)
            a = self.bin_centers()[logits.argmax(-1)]
        return a * self.action_std + self.action_mean

    # ----- losses -----
    def action_loss(self, state: PrefixState, actions: torch.Tensor, *, skip: frozenset[int] | set[int] = frozenset(),
                    generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                    flow_samples: int = 1) -> torch.Tensor:
        """Training loss on raw actions (B, chunk, A). ``weights`` (A,) per action dimension."""
        cfg = self.cfg
        a = (actions - self.action_mean) / self.action_std
        b = a.shape[0]
        w = weights if weights is not None else torch.ones(cfg.action_dim, device=a.device)
        if cfg.head == "flow":
            if flow_samples > 1:  # several (noise, t) draws per prefix: more flow signal per backbone pass
                a = a.repeat_interleave(flow_samples, dim=0)
                state = PrefixState(state.x, state.ids, state.spans, state.valid,
                                    {i: (k.repeat_interleave(flow_samples, 0), v.repeat_interleave(flow_samples, 0))
                                     for i, (k, v) in state.kv.items()},
                                    {i: (m.repeat_interleave(flow_samples, 0) if m is not None else None)
                                     for i, m in state.kv_valid.items()})
                b = a.shape[0]
            noise = torch.randn(a.shape, generator=generator, device=a.device)
            # pi0: t ~ Beta(1.5, 1) emphasises noisier times; mapped to (0.001, 1)
            u = torch.rand(b, generator=generator, device=a.device)
            t = 0.001 + 0.999 * _beta15(u)
            x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
            v = self.velocity(state, x_t, t, skip=skip)
            return (((v - (noise - a)) ** 2) * w).mean()
        if cfg.head == "regression":
            return ((self.head_output(state, b, skip=skip) - a).abs() * w).mean()
        logits = self.head_output(state, b, skip=skip)
        centers = self.bin_centers()
        target = torch.bucketize(a.clamp(-3, 3), (centers[1:] + centers[:-1]) / 2)
        ce = F.cross_entropy(logits.reshape(-1, cfg.n_bins), target.reshape(-1), reduction="none")
        return (ce.view(b, cfg.chunk, cfg.action_dim) * w).mean()

    # ----- language head -----
    def _lang_kv(self, state: PrefixState) -> tuple[int, tuple[torch.Tensor, torch.Tensor]]:
        last = max(state.kv)
        return last, state.kv[last]

    def lang_logits(self, state: PrefixState, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced commentary logits: tokens (B, L) starting with BOS -> (B, L, vocab)."""
        b, n = tokens.shape
        last, (k, v) = self._lang_kv(state)
        h = self.lang_embed(tokens) + self.lang_pos[:n]
        valid = state.kv_valid.get(last)
        pre = valid if valid is not None else torch.ones(b, k.shape[2], dtype=torch.bool, device=h.device)
        causal = torch.ones(n, n, dtype=torch.bool, device=h.device).tril()
        mask = torch.cat([pre[:, None, :].expand(b, n, -1), causal[None].expand(b, -1, -1)], dim=2)[:, None]
        for blk in self.lang_blocks:
            h, _ = blk(h, k, v, mask)
        return self.lang_out(self.lang_norm(h))

    def generate_text(self, state: PrefixState, max_len: int | None = None) -> list[list[int]]:
        """Greedy commentary with a per-layer key/value cache (batch 1 or more, stops at EOS)."""
        max_len = min(max_len or self.cfg.lang_max_len + 1, self.cfg.lang_max_len + 1)  # words + EOS
        b = state.x.shape[0]
        _, (kp, vp) = self._lang_kv(state)
        caches = [(kp, vp) for _ in self.lang_blocks]
        tok = torch.full((b, 1), BOS, dtype=torch.long, device=kp.device)
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool)
        for pos in range(max_len):
            h = self.lang_embed(tok) + self.lang_pos[pos]
            for j, blk in enumerate(self.lang_blocks):
                kc, vc = caches[j]
                hn = blk.norm1(h)
                q, k, v = blk.qkv(hn).view(b, 1, 3, blk.heads, blk.hd).permute(2, 0, 3, 1, 4)
                kc, vc = torch.cat([kc, k], dim=2), torch.cat([vc, v], dim=2)
                caches[j] = (kc, vc)
                a, _ = attention(q, kc, vc, None, False)
                h = h + blk.proj(a.transpose(1, 2).reshape(b, 1, blk.attn_dim))
                h = h + blk.mlp(blk.norm2(h))
            nxt = self.lang_out(self.lang_norm(h))[:, -1].argmax(-1)
            for i in range(b):
                if not done[i]:
                    out[i].append(int(nxt[i]))
            done |= nxt == EOS
            if bool(done.all()):
                break
            tok = nxt[:, None]
        return out


def _beta15(u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF of Beta(1.5, 1) (pi0's flow-time distribution: more weight near t = 1, the noise end)."""
    return u ** (1 / 1.5)
