"""OpenVLA (Prismatic VLM) on the model anatomy, built from Hugging Face ``transformers`` classes.

Architecture (``openvla/openvla-7b``: ``dinosiglip-vit-so-224px`` + ``llama2-7b-pure``)::

    image 224² ─┬─ DINOv2 ViT-L/14 (+4 registers) ─┐ patch features of the PENULTIMATE block, channel-concat
                └─ SigLIP ViT-SO400M/14 ────────────┘ (256 patches, 1024 + 1152 dims)
    -> projector (fused GELU-MLP: fc1 4·Dv, fc2 -> 4096, fc3) -> 256 vision tokens
    prefix = [<s>] + vision tokens + "In: What action should the robot take to {instruction}?\\nOut:" + "▁" (29871)
    -> Llama-2 7B, 32 causal decoder layers -> 7 action tokens decoded greedily from the LM head (one per action
       dimension), token t -> bin ``vocab - t - 1`` of 255 centres in [-1, 1] -> q01/q99 un-normalisation of the
       checkpoint's ``norm_stats[unnorm_key]``.

Anatomy mapping: layer i = Llama decoder layer i (the same module computes the prefix pass and the decode steps);
``TokenSpans``: vision = the patch tokens, language = the prompt tokens after them, proprio = empty (OpenVLA has no
proprio input); the BOS token at position 0 belongs to no span and is never pruned. ``sample_actions`` is the
autoregressive decode over the prefix's per-layer K/V (pruned tokens are absent, skipped layers are skipped for the
prefix and the decode steps alike).

Weights: :func:`load_openvla` reads a local copy of the Hugging Face checkpoint (``config.json`` + safetensors shards,
timm-style vision keys) and maps the keys onto the transformers modules (:func:`timm_to_hf` — identity for the
projector and the Llama LM); :meth:`OpenVLAModel.save_pretrained` writes the same layout (inverse mapping), so the
round trip exercises the real loader. ``trust_remote_code`` is never used: the checkpoint's Python files are not run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.anatomy import PrefixLayers, PrefixState, TokenSpans
from harness.interfaces import ConfigError
from methods.openvla.common import attend, image_to_float, prefix_mask, require_transformers

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
# timm ids in OpenVLA's config.json -> the tower's shape (the penultimate block's patch features are used)
TIMM_TOWERS: dict[str, dict[str, Any]] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": {
        "kind": "dinov2",
        "hidden": 1024,
        "depth": 24,
        "heads": 16,
        "mlp": 4096,
        "patch": 14,
        "reg": 4,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    },
    "vit_so400m_patch14_siglip_224": {
        "kind": "siglip",
        "hidden": 1152,
        "depth": 27,
        "heads": 16,
        "mlp": 4304,
        "patch": 14,
        "mean": HALF,
        "std": HALF,
    },
    "vit_so400m_patch14_siglip_384": {
        "kind": "siglip",
        "hidden": 1152,
        "depth": 27,
        "heads": 16,
        "mlp": 4304,
        "patch": 14,
        "mean": HALF,
        "std": HALF,
    },
}
EMPTY_TOKEN_ID = 29871  # Llama's "▁": OpenVLA appends it after "Out:" (as at training time)
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


# --------------------------------------------------------------------------------------------------
# vision
# --------------------------------------------------------------------------------------------------
class VisionTower(nn.Module):
    """One ViT of the (fused) backbone as a transformers module; returns the penultimate block's patch tokens
    (OpenVLA: ``timm get_intermediate_layers(n={depth - 2})``, no final norm, prefix tokens dropped). The last
    block's weights are kept (checkpoint layout) but never computed: its output is unused."""

    def __init__(self, spec: dict[str, Any], image_size: int):
        super().__init__()
        tf = require_transformers("openvla")
        self.spec, self.kind = dict(spec), spec["kind"]
        if self.kind == "dinov2":
            cfg = tf.Dinov2WithRegistersConfig(
                hidden_size=spec["hidden"],
                num_hidden_layers=spec["depth"],
                num_attention_heads=spec["heads"],
                mlp_ratio=spec["mlp"] // spec["hidden"],
                image_size=image_size,
                patch_size=spec["patch"],
                num_register_tokens=spec.get("reg", 0),
                layerscale_value=1e-5,
                hidden_act="gelu",
                layer_norm_eps=1e-6,
                qkv_bias=True,
            )
            self.vit = tf.Dinov2WithRegistersModel(cfg)
            self.n_prefix = 1 + spec.get("reg", 0)
        elif self.kind == "siglip":
            cfg = tf.SiglipVisionConfig(
                hidden_size=spec["hidden"],
                intermediate_size=spec["mlp"],
                num_hidden_layers=spec["depth"],
                num_attention_heads=spec["heads"],
                image_size=image_size,
                patch_size=spec["patch"],
                hidden_act="gelu",
                layer_norm_eps=1e-6,
                vision_use_head=False,
            )  # timm's SigLIP uses exact GELU
            self.vit = tf.SiglipVisionModel(cfg)
            self.n_prefix = 0
        else:
            raise ValueError(f"vision tower kind must be dinov2 | siglip, got {self.kind!r}")
        self.register_buffer("mean", torch.tensor(spec["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.spec["hidden"])

    @property
    def core(self) -> nn.Module:
        """The module holding embeddings/encoder (transformers v4's SiglipVisionModel nests it in .vision_model)."""
        return getattr(self.vit, "vision_model", self.vit)

    @property
    def core_prefix(self) -> str:
        return "vit.vision_model." if hasattr(self.vit, "vision_model") else "vit."

    def layers(self) -> nn.ModuleList:
        return self.core.encoder.layer if self.kind == "dinov2" else self.core.encoder.layers

    def forward(self, pixels01: torch.Tensor) -> torch.Tensor:
        x = (pixels01 - self.mean) / self.std
        if self.kind == "dinov2":
            h = self.vit.embeddings(x)
            for blk in self.layers()[:-1]:
                h = blk(h)
        else:
            h = self.core.embeddings(x)
            for blk in self.layers()[:-1]:
                h = blk(h, None)
        h = h[0] if isinstance(h, tuple) else h
        return h[:, self.n_prefix :]


class VisionBackbone(nn.Module):
    def __init__(self, specs: list[dict[str, Any]], image_sizes: list[int]):
        super().__init__()
        self.featurizer = VisionTower(specs[0], image_sizes[0])
        self.use_fused = len(specs) > 1
        if self.use_fused:
            self.fused_featurizer = VisionTower(specs[1], image_sizes[1])
        self.embed_dim = self.featurizer.dim + (self.fused_featurizer.dim if self.use_fused else 0)

    def forward(self, pixels01: torch.Tensor) -> torch.Tensor:
        p = self.featurizer(pixels01)
        if self.use_fused:
            p = torch.cat([p, self.fused_featurizer(pixels01)], dim=2)
        return p


class Projector(nn.Module):
    """Prismatic's projector (same parameter names: fc1, fc2[, fc3])."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1, self.fc2, self.fc3 = (
                nn.Linear(vision_dim, 4 * vision_dim),
                nn.Linear(4 * vision_dim, llm_dim),
                nn.Linear(llm_dim, llm_dim),
            )
        else:
            self.fc1, self.fc2 = nn.Linear(vision_dim, llm_dim), nn.Linear(llm_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(F.gelu(self.fc1(x)))
        return self.fc3(F.gelu(x)) if self.fused else x


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
def tower_specs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The vision towers of an OpenVLA config: ``vla_bench.vision_towers`` (tiny models) or the timm ids."""
    ext = (config.get("vla_bench") or {}).get("vision_towers")
    if ext:
        return [dict(s) for s in ext]
    ids = config.get("timm_model_ids") or []
    unknown = [i for i in ids if i not in TIMM_TOWERS]
    if unknown or not ids:
        raise ValueError(f"unsupported OpenVLA vision backbone {ids} (supported timm ids: {sorted(TIMM_TOWERS)})")
    return [dict(TIMM_TOWERS[i]) for i in ids]


class OpenVLAModel(PrefixLayers, nn.Module):
    """OpenVLA with :class:`harness.anatomy.VLAAnatomy`. ``config`` is the checkpoint's ``config.json`` (dict)."""

    def __init__(
        self,
        config: dict[str, Any],
        tokenizer: Any,
        *,
        unnorm_key: str | None = None,
        camera: str = "image",
        center_crop: bool = False,
    ):
        super().__init__()
        tf = require_transformers("openvla")
        self.config = config
        specs = tower_specs(config)
        sizes = list(config.get("image_sizes") or [224] * len(specs))
        self.vision_backbone = VisionBackbone(specs, sizes)
        tc = dict(config.get("text_config") or {})
        tc.pop("model_type", None)
        tc.pop("torch_dtype", None)
        self.text_config = tf.LlamaConfig(**tc)
        self.text_config._attn_implementation = "sdpa"
        self.projector = Projector(
            self.vision_backbone.use_fused, self.vision_backbone.embed_dim, self.text_config.hidden_size
        )
        self.language_model = tf.LlamaForCausalLM(self.text_config)
        self.tokenizer = tokenizer
        self.camera, self.center_crop = camera, center_crop
        self.image_size = sizes[0]
        self.n_bins = int(config.get("n_action_bins", 256))
        bins = np.linspace(-1, 1, self.n_bins)
        self.register_buffer(
            "bin_centers", torch.tensor((bins[:-1] + bins[1:]) / 2.0, dtype=torch.float32), persistent=False
        )
        self.vocab_size = int(self.text_config.vocab_size) - int(config.get("pad_to_multiple_of", 64))
        self.empty_token_id = int((config.get("vla_bench") or {}).get("empty_token_id", EMPTY_TOKEN_ID))
        self.norm_stats = config.get("norm_stats") or {}
        self.set_unnorm_key(unnorm_key)
        self.n_heads = self.text_config.num_attention_heads
        self.head_dim = getattr(self.text_config, "head_dim", None) or self.text_config.hidden_size // self.n_heads

    @property
    def _rope(self) -> nn.Module:
        return self.language_model.model.rotary_emb

    # ----- norm stats -----
    def set_unnorm_key(self, unnorm_key: str | None) -> str:
        stats = self.norm_stats
        if not stats:
            raise ConfigError("the OpenVLA config has no norm_stats")
        if not unnorm_key:
            if len(stats) != 1:
                raise ConfigError(
                    f"this OpenVLA checkpoint was trained on several datasets; set unnorm_key to one of {sorted(stats)}"
                )
            unnorm_key = next(iter(stats))
        if unnorm_key not in stats:
            import difflib

            close = difflib.get_close_matches(unnorm_key, list(stats), n=1)
            raise ConfigError(
                f"unnorm_key {unnorm_key!r} not in the checkpoint's norm_stats"
                f"{f'; did you mean {close[0]!r}?' if close else ''} (has {sorted(stats)})"
            )
        a = stats[unnorm_key]["action"]
        low, high = torch.tensor(a["q01"], dtype=torch.float32), torch.tensor(a["q99"], dtype=torch.float32)
        mask = torch.tensor(a.get("mask", [True] * len(a["q01"])), dtype=torch.bool)
        dev = self.bin_centers.device
        self.register_buffer("action_low", low.to(dev), persistent=False)
        self.register_buffer("action_high", high.to(dev), persistent=False)
        self.register_buffer("action_mask", mask.to(dev), persistent=False)
        self.unnorm_key = unnorm_key
        return unnorm_key

    @property
    def action_dim(self) -> int:
        return int(self.action_low.numel())

    # ----- anatomy: layers -----
    @property
    def n_layers(self) -> int:
        return len(self.language_model.model.layers)

    def layer_modules(self, i: int) -> list[nn.Module]:
        return [self.language_model.model.layers[i]]  # the decoder layer serves the prefix and the decode steps

    # ----- inputs -----
    def encode_instruction(self, instruction: str) -> torch.Tensor:
        ids = self.tokenizer(PROMPT.format(instruction=instruction.lower()), add_special_tokens=False)["input_ids"]
        ids = [self.tokenizer.bos_token_id] + list(ids)
        if ids[-1] != self.empty_token_id:
            ids.append(self.empty_token_id)
        return torch.tensor([ids], dtype=torch.long)

    def noise(self, gen: torch.Generator) -> None:
        return None  # greedy decoding: nothing random

    @property
    def device(self) -> torch.device:
        return self.bin_centers.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    def pixels(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 (B,H,W,3) -> float (B,3,S,S) in [0,1]: bicubic resize (antialiased; the HF processor uses PIL's
        bicubic) and, for checkpoints fine-tuned with random crops, OpenVLA's eval-time centre crop (90 % area)."""
        s = self.image_size
        x = image_to_float(img, self.device)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        if self.center_crop:
            c = round(s * math.sqrt(0.9))
            o = (s - c) // 2
            x = F.interpolate(
                x[..., o : o + c, o : o + c], size=(s, s), mode="bilinear", antialias=True, align_corners=False
            )
        return x.to(self.dtype)

    # ----- prefix -----
    def embed_prefix(
        self,
        images: dict[str, torch.Tensor],
        text: torch.Tensor,
        proprio: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> PrefixState:
        """images {camera: uint8 (B,H,W,3)} (only ``self.camera`` is used), text (B,T) ids starting with BOS,
        proprio ignored (OpenVLA has no proprio input)."""
        cam = self.camera if self.camera in images else next(iter(images))
        patches = self.projector(self.vision_backbone(self.pixels(images[cam])))
        text = text.to(self.device)
        emb = self.language_model.model.embed_tokens(text)
        x = torch.cat([emb[:, :1], patches, emb[:, 1:]], dim=1)
        b, n, _ = x.shape
        p = patches.shape[1]
        spans = TokenSpans(vision={cam: (1, 1 + p)}, language=(1 + p, n), proprio=(n, n))
        valid = None
        if text_mask is not None and not bool(text_mask.all()):
            valid = torch.ones(b, n, dtype=torch.bool, device=x.device)
            valid[:, 0] = text_mask[:, 0].bool()
            valid[:, 1 + p :] = text_mask[:, 1:].bool().to(x.device)
        ids = torch.arange(n, device=x.device).expand(b, n)
        return PrefixState(x=x, ids=ids, spans=spans, valid=valid)

    def _layer(
        self,
        i: int,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
        need_attn: bool,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        fill: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ):
        """Decoder layer i on tokens x (B,n,d) at positions pos (B,n). ``past`` K/V are prepended (decode steps);
        ``fill`` = (K, V, slots): x's K/V overwrite those slots of a cached full-prefix K/V (KV reuse)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        layer = self.language_model.model.layers[i]
        at = layer.self_attn
        b, n, _ = x.shape
        h = layer.input_layernorm(x)
        q = at.q_proj(h).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = at.k_proj(h).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = at.v_proj(h).view(b, n, -1, self.head_dim).transpose(1, 2)
        cos, sin = self._rope(v, pos)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if fill is not None:
            kc, vc, slots = fill
            k, v = kc.index_copy(2, slots, k), vc.index_copy(2, slots, v)
        kk, vv = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        a, w = attend(q, kk, vv, mask, need_attn)
        x = x + at.o_proj(a.transpose(1, 2).reshape(b, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x, k, v, w

    _prefix_layer = _layer  # forward_prefix: harness.anatomy.PrefixLayers

    def _prefix_mask(self, state: PrefixState, k_ids: torch.Tensor, k_valid: torch.Tensor | None
                     ) -> torch.Tensor | None:
        """The Llama layers over the prefix: causal on original positions."""
        return prefix_mask(state.ids, k_ids, k_valid, causal=True)

    # ----- action decoding -----
    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.language_model.lm_head(self.language_model.model.norm(h))

    def _decode(
        self,
        state: PrefixState,
        tokens: torch.Tensor,
        past: dict[int, tuple[torch.Tensor, torch.Tensor]],
        start: int,
        skip: frozenset[int] | set[int],
        need_attn: bool = False,
        attn_out: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Feed ``tokens`` (B, L) at positions start.. through the layers, attending to the prefix K/V of each
        layer plus ``past`` (updated in place); returns the last layer's hidden states (B, L, d)."""
        b, L = tokens.shape
        h = self.language_model.model.embed_tokens(tokens)
        pos = (start + torch.arange(L, device=h.device))[None].expand(b, L)
        for i in range(self.n_layers):
            if i in skip or i not in state.kv:
                continue
            kp, vp = state.kv[i]
            if i in past:
                kp, vp = torch.cat([kp, past[i][0]], 2), torch.cat([vp, past[i][1]], 2)
            n_prev = kp.shape[2]
            valid = state.kv_valid.get(i)
            pre = (
                valid
                if valid is not None
                else torch.ones(b, state.kv[i][0].shape[2], dtype=torch.bool, device=h.device)
            )
            prev = torch.ones(b, n_prev - pre.shape[1], dtype=torch.bool, device=h.device)
            causal = torch.ones(L, L, dtype=torch.bool, device=h.device).tril()
            mask = torch.cat(
                [torch.cat([pre, prev], 1)[:, None, :].expand(b, L, -1), causal[None].expand(b, -1, -1)], dim=2
            )[:, None]
            if L == 1 and valid is None:
                mask = None  # one query sees every key
            h, k, v, w = self._layer(i, h, pos, mask, need_attn, past=(kp, vp))
            past[i] = (k, v) if i not in past else (torch.cat([past[i][0], k], 2), torch.cat([past[i][1], v], 2))
            if w is not None and attn_out is not None:
                attn_out[i] = w[..., : state.kv[i][0].shape[2]]
        return h

    def tokens_to_actions(self, tok: torch.Tensor) -> torch.Tensor:
        """OpenVLA's de-tokenisation: token t -> bin clip(vocab - t - 1) -> centre -> q01/q99 un-normalisation."""
        disc = (self.vocab_size - tok - 1).clamp(0, self.bin_centers.numel() - 1)
        a = self.bin_centers[disc]
        lo, hi = self.action_low, self.action_high
        return torch.where(self.action_mask, 0.5 * (a + 1) * (hi - lo) + lo, a)

    def actions_to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """The inverse (OpenVLA's ActionTokenizer): normalise with q01/q99, clip to [-1, 1], ``np.digitize``."""
        lo, hi = self.action_low, self.action_high
        a = torch.where(self.action_mask, 2 * (actions - lo) / (hi - lo).clamp_min(1e-8) - 1, actions).clamp(-1, 1)
        bins = torch.linspace(-1, 1, self.n_bins, device=a.device)
        return self.vocab_size - torch.bucketize(a, bins, right=True)

    def sample_actions(
        self,
        state: PrefixState,
        noise: torch.Tensor | None = None,
        *,
        skip: frozenset[int] | set[int] = frozenset(),
        steps: int | None = None,
        need_attn: bool = False,
        attn_out: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Greedy decoding of ``action_dim`` tokens (as ``generate(do_sample=False)``) -> (B, 1, A) actions in the
        checkpoint's units. ``noise``/``steps`` are ignored (no sampling)."""
        b = state.x.shape[0]
        ids = self.decode_tokens(state, skip=skip, need_attn=need_attn, attn_out=attn_out)
        return self.tokens_to_actions(ids).view(b, 1, self.action_dim).float()

    def decode_tokens(
        self,
        state: PrefixState,
        *,
        skip: frozenset[int] | set[int] = frozenset(),
        need_attn: bool = False,
        attn_out: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, action_dim) greedy token ids: the prefix's last hidden state gives the first, then one decode step
        per further token with a per-layer K/V cache (HF ``generate(max_new_tokens=A, do_sample=False)``)."""
        n0 = int(state.spans.n_tokens)
        past: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        tok = self._logits(state.x[:, -1:]).argmax(-1)  # (B, 1)
        out = [tok]
        for j in range(1, self.action_dim):
            last = j == self.action_dim - 1
            h = self._decode(state, tok, past, n0 + j - 1, skip, need_attn and last, attn_out if last else None)
            tok = self._logits(h[:, -1:]).argmax(-1)
            out.append(tok)
        return torch.cat(out, dim=1)

    def action_loss(
        self, state: PrefixState, actions: torch.Tensor, *, skip: frozenset[int] | set[int] = frozenset(), **_: Any
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of the action tokens of actions[:, 0] (B, A) — OpenVLA's training loss."""
        target = self.actions_to_tokens(actions[:, 0].to(self.device))  # (B, A)
        h = self._decode(state, target[:, :-1], {}, int(state.spans.n_tokens), skip) if self.action_dim > 1 else None
        first = self._logits(state.x[:, -1:])
        logits = first if h is None else torch.cat([first, self._logits(h)], dim=1)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))

    # ----- saving (checkpoint layout of openvla/openvla-7b) -----
    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = hf_to_timm(self.state_dict(), self)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in sd.items()},
            str(folder / "model.safetensors"),
            metadata={"format": "pt"},
        )
        (folder / "config.json").write_text(json.dumps(self.config, indent=1))
        self.tokenizer.save_pretrained(str(folder))


# --------------------------------------------------------------------------------------------------
# key mapping: OpenVLA checkpoint (timm vision keys) <-> transformers modules
# --------------------------------------------------------------------------------------------------
def _tower_names(tower: VisionTower) -> dict[str, str]:
    """timm block-local name -> HF block-local name for this transformers version (v4 and v5 names differ)."""
    keys = set(tower.layers()[0].state_dict())
    if tower.kind == "dinov2":
        attn = (
            ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
            if "attention.q_proj.weight" in keys
            else (
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
            )
        )
        return {
            "norm1": "norm1",
            "norm2": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
            "q": attn[0],
            "k": attn[1],
            "v": attn[2],
            "attn.proj": attn[3],
            "ls1": "layer_scale1.lambda1",
            "ls2": "layer_scale2.lambda1",
        }
    return {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "attn.proj": "self_attn.out_proj",
    }


def _tower_prefix(tower: VisionTower) -> str:
    return tower.core_prefix + ("encoder.layer" if tower.kind == "dinov2" else "encoder.layers")


def timm_to_hf(sd: dict[str, torch.Tensor], model: OpenVLAModel) -> tuple[dict[str, torch.Tensor], list[str]]:
    """OpenVLA checkpoint keys -> :class:`OpenVLAModel` keys. Returns (mapped, dropped keys). Vision towers: timm
    ViT keys (fused ``qkv`` split into q/k/v; LayerScale ``ls*.scale_factor``/``gamma``; DINOv2's ``pos_embed``
    has no class position -> a zero row is prepended; SigLIP's ``attn_pool`` head is unused and dropped). The
    projector and ``language_model.*`` (LlamaForCausalLM) keys are identical."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    towers = {"vision_backbone.featurizer.": model.vision_backbone.featurizer}
    if model.vision_backbone.use_fused:
        towers["vision_backbone.fused_featurizer."] = model.vision_backbone.fused_featurizer
    for key, t in sd.items():
        tw = next(((p, tw) for p, tw in towers.items() if key.startswith(p)), None)
        if tw is None:
            if key.startswith("vision_backbone."):
                dropped.append(key)
            else:
                out[key] = t
            continue
        pre, tower = tw
        rest = key[len(pre) :]
        dst = pre + _map_tower_key(rest, t, tower, out, pre)
        if dst.endswith("#dropped"):
            dropped.append(key)
        elif dst != pre + "#done":
            out[dst] = t
    return out, dropped


def _map_tower_key(rest: str, t: torch.Tensor, tower: VisionTower, out: dict[str, torch.Tensor], pre: str) -> str:
    names, lp = _tower_names(tower), _tower_prefix(tower)
    dino = tower.kind == "dinov2"
    if rest == "cls_token" and dino:
        return "vit.embeddings.cls_token"
    if rest == "reg_token" and dino:
        return "vit.embeddings.register_tokens"
    if rest == "pos_embed":
        if dino:
            n_patch = (tower.vit.config.image_size // tower.vit.config.patch_size) ** 2
            if t.shape[1] == n_patch:  # timm no_embed_class: the class token has no position
                t = torch.cat([torch.zeros_like(t[:, :1]), t], dim=1)
            out[pre + "vit.embeddings.position_embeddings"] = t
            return "#done"
        out[pre + tower.core_prefix + "embeddings.position_embedding.weight"] = t[0]
        return "#done"
    if rest.startswith("patch_embed.proj."):
        leaf = rest.split(".")[-1]
        return (
            f"vit.embeddings.patch_embeddings.projection.{leaf}"
            if dino
            else f"{tower.core_prefix}embeddings.patch_embedding.{leaf}"
        )
    if rest.startswith("norm."):
        return ("vit.layernorm." if dino else tower.core_prefix + "post_layernorm.") + rest.split(".")[-1]
    if rest.startswith("blocks."):
        _, idx, *local = rest.split(".")
        local_s = ".".join(local)
        base = f"{lp}.{idx}."
        if local_s.startswith("attn.qkv."):
            leaf = local[-1]
            qh, kh, vh = t.chunk(3, dim=0)
            for part, tt in (("q", qh), ("k", kh), ("v", vh)):
                out[pre + base + f"{names[part]}.{leaf}"] = tt.contiguous()
            return "#done"
        if local[0] in ("ls1", "ls2"):
            return base + names[local[0]]
        for src in ("norm1", "norm2", "mlp.fc1", "mlp.fc2", "attn.proj"):
            if local_s.startswith(src + "."):
                return base + names[src] + local_s[len(src) :]
    return "#dropped"  # attn_pool (SigLIP MAP head), fc_norm, head: not used by OpenVLA


def hf_to_timm(sd: dict[str, torch.Tensor], model: OpenVLAModel) -> dict[str, torch.Tensor]:
    """The inverse of :func:`timm_to_hf` (writes the checkpoint layout; DINOv2's mask token is not saved)."""
    out: dict[str, torch.Tensor] = {}
    towers = {"vision_backbone.featurizer.": model.vision_backbone.featurizer}
    if model.vision_backbone.use_fused:
        towers["vision_backbone.fused_featurizer."] = model.vision_backbone.fused_featurizer
    for pre, tower in towers.items():
        names, lp = _tower_names(tower), _tower_prefix(tower)
        inv = {v: k for k, v in names.items()}
        dino = tower.kind == "dinov2"
        g = {k[len(pre) :]: v for k, v in sd.items() if k.startswith(pre)}
        if dino:
            out[pre + "cls_token"] = g["vit.embeddings.cls_token"]
            if "vit.embeddings.register_tokens" in g and tower.spec.get("reg", 0):
                out[pre + "reg_token"] = g["vit.embeddings.register_tokens"]
            out[pre + "pos_embed"] = g["vit.embeddings.position_embeddings"][:, 1:]
            emb, norm = "vit.embeddings.patch_embeddings.projection.", "vit.layernorm."
        else:
            cp = tower.core_prefix
            out[pre + "pos_embed"] = g[cp + "embeddings.position_embedding.weight"][None]
            emb, norm = cp + "embeddings.patch_embedding.", cp + "post_layernorm."
        for leaf in ("weight", "bias"):
            out[pre + f"patch_embed.proj.{leaf}"] = g[emb + leaf]
            out[pre + f"norm.{leaf}"] = g[norm + leaf]
        for idx in range(len(tower.layers())):
            base = f"{lp}.{idx}."
            blk = {k[len(base) :]: v for k, v in g.items() if k.startswith(base)}
            for leaf in ("weight", "bias"):
                out[pre + f"blocks.{idx}.attn.qkv.{leaf}"] = torch.cat(
                    [blk[f"{names[p]}.{leaf}"] for p in ("q", "k", "v")], dim=0
                )
            for local, t in blk.items():
                hit = next(
                    (h for h in inv if local.startswith(h) and h not in (names["q"], names["k"], names["v"])), None
                )
                if hit is None:
                    continue
                src = inv[hit]
                if src in ("ls1", "ls2"):
                    out[pre + f"blocks.{idx}.{src}.scale_factor"] = t
                else:
                    out[pre + f"blocks.{idx}.{src}{local[len(hit) :]}"] = t
    for k, v in sd.items():
        if not k.startswith("vision_backbone."):
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------------
# building and loading
# --------------------------------------------------------------------------------------------------
def tiny_config(
    *,
    action_dim: int,
    image_size: int,
    layers: int = 6,
    width: int = 64,
    heads: int = 4,
    n_bins: int = 64,
    base_vocab: int = 256,
    patch: int = 8,
) -> dict[str, Any]:
    """An OpenVLA ``config.json`` with tiny random sizes (same fields as the real one, plus ``vla_bench``)."""
    return {
        "model_type": "openvla",
        "architectures": ["OpenVLAForActionPrediction"],
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [image_size, image_size],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "n_action_bins": n_bins,
        "pad_to_multiple_of": 64,
        "pad_token_id": base_vocab,
        "text_config": {
            "model_type": "llama",
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "vocab_size": base_vocab + 64,
            "max_position_embeddings": 512,
            "pad_token_id": base_vocab,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "norm_stats": {
            "tiny": {"action": {"q01": [-1.0] * action_dim, "q99": [1.0] * action_dim, "mask": [True] * action_dim}}
        },
        "vla_bench": {
            "tiny": True,
            "empty_token_id": 3,
            "vision_towers": [
                {
                    "kind": "dinov2",
                    "hidden": 32,
                    "depth": 3,
                    "heads": 2,
                    "mlp": 64,
                    "patch": patch,
                    "reg": 2,
                    "mean": IMAGENET_MEAN,
                    "std": IMAGENET_STD,
                },
                {
                    "kind": "siglip",
                    "hidden": 48,
                    "depth": 3,
                    "heads": 2,
                    "mlp": 96,
                    "patch": patch,
                    "mean": HALF,
                    "std": HALF,
                },
            ],
        },
    }


def tiny_tokenizer(texts: list[str], base_vocab: int = 256) -> Any:
    """Word-level tokenizer over the prompt's and the suite's words (id 3 = "▁", OpenVLA's empty token); the
    top ``n_bins - 1`` ids of ``base_vocab`` are the action tokens."""
    from methods.openvla.common import word_tokenizer

    return word_tokenizer([PROMPT.format(instruction="")] + list(texts), base_vocab, extra=("▁",))


def build_tiny(
    *, action_dim: int, image_size: int, texts: list[str], seed: int = 0, camera: str = "image", **sizes: Any
) -> OpenVLAModel:
    cfg = tiny_config(action_dim=action_dim, image_size=image_size, **sizes)
    tok = tiny_tokenizer(texts, base_vocab=cfg["pad_token_id"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLAModel(cfg, tok, camera=camera)
        # HF initialises LayerScale to 1e-5 and biases to 0 (blocks ~ identity); randomise them so that tests can
        # tell a wrong key mapping apart
        for name, t in model.vision_backbone.named_parameters():
            if "lambda1" in name:
                t.data.uniform_(0.5, 1.0)
            elif name.endswith("bias") or "token" in name:
                t.data.normal_(0.0, 0.02)
            elif name.endswith("embeddings.position_embeddings"):  # timm DINOv2: the class token has no position
                t.data[:, 0] = 0.0
    return model.eval()


def _read_weights(folder: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json); is this an OpenVLA checkpoint folder?")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(folder / f), device=str(device)))
    return sd


def load_openvla(
    folder: str | Path,
    *,
    unnorm_key: str | None = None,
    camera: str = "image",
    center_crop: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> OpenVLAModel:
    """Load a local OpenVLA checkpoint folder (``huggingface-cli download openvla/openvla-7b --local-dir D``): its
    ``config.json``, tokenizer files and safetensors shards. No remote code runs. The model is built on the meta
    device and the mapped weights are assigned (no 7B random initialisation)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}/config.json not found: point `checkpoint` at a local OpenVLA folder")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") not in ("openvla", "prismatic"):
        raise ValueError(f"{folder}: model_type {config.get('model_type')!r} is not openvla")
    tf = require_transformers("openvla")
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    with torch.device("meta"):
        model = OpenVLAModel(config, tok, unnorm_key=unnorm_key, camera=camera, center_crop=center_crop)
    sd, _dropped = timm_to_hf(_read_weights(folder, device), model)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    own = model.state_dict()
    for k in own:  # parameters the checkpoint does not carry (DINOv2's mask token: unused at inference)
        if k not in sd and k.endswith("mask_token"):
            sd[k] = torch.zeros(own[k].shape, dtype=dtype, device=device)
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not match the OpenVLA layout: missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(sd, assign=True)
    _materialise_buffers(model, device)
    return model.eval()


def _materialise_buffers(model: OpenVLAModel, device: str | torch.device) -> None:
    """Non-persistent buffers created on the meta device (rotary frequencies, position ids, normalisation)."""
    require_transformers("openvla")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    lm = model.language_model.model
    lm.rotary_emb = LlamaRotaryEmbedding(model.text_config).to(device)
    for mod in model.modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":
                mod.register_buffer(
                    name, torch.arange(buf.shape[-1], device=device).expand(buf.shape).clone(), persistent=False
                )
            elif isinstance(mod, VisionTower) and name in ("mean", "std"):
                mod.register_buffer(
                    name, torch.tensor(mod.spec[name], device=device).view(1, 3, 1, 1), persistent=False
                )
    n_bins = model.n_bins
    bins = np.linspace(-1, 1, n_bins)
    model.register_buffer(
        "bin_centers", torch.tensor((bins[:-1] + bins[1:]) / 2.0, dtype=torch.float32, device=device), persistent=False
    )
    model.set_unnorm_key(model.unnorm_key)
    left = [n for n, b in model.named_buffers() if b.is_meta] + [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after loading: {left[:8]}")
