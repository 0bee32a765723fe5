"""SmolVLA (LeRobot) on the model anatomy, rebuilt from Hugging Face ``transformers`` classes.

LeRobot's own ``SmolVLAPolicy`` is NOT used here: ``lerobot`` (0.4.4) cannot be imported beside this project's
torch — it pins ``torch<2.11``, ``transformers<5`` and ``huggingface-hub<0.36``, and ``lerobot.policies`` imports
``torchvision`` (via ``lerobot.datasets.utils`` and ``lerobot.processor``), which does not import beside torch 2.13
(see README.md). This module re-implements LeRobot's ``VLAFlowMatching`` / ``SmolVLMWithExpertModel`` forward pass on
the same transformers modules and with the same parameter names, so LeRobot's ``model.safetensors`` loads as is.

Architecture (``lerobot/smolvla_base``)::

    per camera: image -> resize-with-pad to 512² -> SigLIP (SmolVLM2) -> pixel-shuffle connector -> 64 tokens ·√d
    + instruction tokens ·√d (task + "\\n", ≤ 48) + one state token (state_proj of the mean/std-normalised state)
    prefix attention: bidirectional over images + language; the state token sees everything, nobody sees it
    VLM: the first 16 SmolLM2 layers (RoPE base 10 000 as LeRobot, whatever the VLM's rope_theta)
    action expert: 16 Llama layers of width 0.75·d; layer i pairs with VLM layer i: even layers self-attend over
    [prefix K/V of layer i, action tokens] (causal among the actions), odd layers cross-attend to the prefix K/V
    re-projected by the expert's own k/v projections; flow matching, 10 Euler steps from t=1 (noise) to 0,
    chunk 50, actions padded to 32 dims, mean/std un-normalised.

Anatomy: layer i = (VLM layer i, expert layer i) — skipping i skips both; spans vision[camera] / language /
proprio (the state token); pruning hooks run between VLM layers and the expert sees the surviving tokens' K/V.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.anatomy import PrefixLayers, PrefixState, TokenSpans
from methods.openvla.common import attend, image_to_float, prefix_mask, require_transformers


def apply_rope(x: torch.Tensor, positions: torch.Tensor, max_wavelength: float = 10_000) -> torch.Tensor:
    """LeRobot's RoPE (x (B, L, H, D), positions (B, L)); halves rotated, computed in float32."""
    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.float()
    freq = (2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32, device=x.device)
    timescale = max_wavelength**freq
    rad = positions[..., None].float() / timescale[None, None, :]
    rad = rad[..., None, :]
    sin, cos = rad.sin(), rad.cos()
    x1, x2 = x.split(d_half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


def get_intermediate_size(hidden_dim: int, ffn_dim_multiplier: int = 4, multiple_of: int = 256) -> int:
    hidden_dim = int(2 * hidden_dim / 3)
    hidden_dim = int(ffn_dim_multiplier * hidden_dim)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


def sinusoidal(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """LeRobot's ``create_sinusoidal_pos_embedding`` (float64 where the device supports it)."""
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    x = (1.0 / period * 2 * math.pi)[None, :] * t[:, None].to(dtype)
    return torch.cat([x.sin(), x.cos()], dim=1)


def resize_with_pad(img: torch.Tensor, width: int, height: int, pad_value: float = 0.0) -> torch.Tensor:
    """LeRobot's resize (bilinear, aspect kept) + padding on the left and top."""
    cur_h, cur_w = img.shape[2:]
    ratio = max(cur_w / width, cur_h / height)
    rh, rw = int(cur_h / ratio), int(cur_w / ratio)
    if (rh, rw) != (cur_h, cur_w):
        img = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(img, (max(0, width - rw), 0, max(0, height - rh), 0), value=pad_value)


class SmolVLMWithExpert(nn.Module):
    """LeRobot's ``SmolVLMWithExpertModel`` modules (same attribute names): ``vlm`` (SmolVLMForConditionalGeneration,
    text layers cut to ``num_vlm_layers``) and ``lm_expert`` (a narrower Llama, cross-attention layers' k/v
    projections taking the VLM's K/V width)."""

    def __init__(
        self,
        vlm_config: Any,
        *,
        num_vlm_layers: int,
        num_expert_layers: int,
        self_attn_every_n_layers: int,
        expert_width_multiplier: float,
        attention_mode: str,
    ):
        super().__init__()
        tf = require_transformers("smolvla")
        self.vlm = tf.SmolVLMForConditionalGeneration(vlm_config)
        text = self.vlm.model.text_model
        if num_vlm_layers > 0:
            text.layers = text.layers[:num_vlm_layers]
        self.num_vlm_layers = len(text.layers)
        tc = vlm_config.text_config
        ec = copy.deepcopy(tc)
        ec.hidden_size = int(tc.hidden_size * expert_width_multiplier)
        ec.intermediate_size = get_intermediate_size(ec.hidden_size)
        ec.num_hidden_layers = num_expert_layers if num_expert_layers > 0 else self.num_vlm_layers
        if self.num_vlm_layers % ec.num_hidden_layers:
            raise ValueError(
                f"num_vlm_layers {self.num_vlm_layers} is not a multiple of num_expert_layers {ec.num_hidden_layers}"
            )
        self.lm_expert = tf.AutoModel.from_config(ec)
        self.attention_mode, self.every = attention_mode, self_attn_every_n_layers
        hd = tc.head_dim
        if "cross" in attention_mode:
            for j, layer in enumerate(self.lm_expert.layers):
                if self.every > 0 and j % self.every == 0:
                    continue
                layer.self_attn.k_proj = nn.Linear(
                    tc.num_key_value_heads * hd, ec.num_key_value_heads * ec.head_dim, bias=ec.attention_bias
                )
                layer.self_attn.v_proj = nn.Linear(
                    tc.num_key_value_heads * hd, ec.num_key_value_heads * ec.head_dim, bias=ec.attention_bias
                )
        self.lm_expert.embed_tokens = None
        self.expert_hidden_size = ec.hidden_size
        self.multiple_of = self.num_vlm_layers // len(self.lm_expert.layers)

    def expert_layer(self, i: int) -> nn.Module | None:
        """The expert layer paired with VLM layer i (LeRobot's ``get_model_layers``)."""
        m = self.multiple_of
        if m > 0 and i > 0 and i % m != 0:
            return None
        return self.lm_expert.layers[i // m if m > 0 else i]

    def is_cross(self, i: int) -> bool:
        return "cross" in self.attention_mode and not (self.every > 0 and i % self.every == 0)


class FlowMatching(nn.Module):
    """LeRobot's ``VLAFlowMatching`` parameters (``model.*`` in the checkpoint)."""

    def __init__(self, vlm_config: Any, cfg: dict[str, Any]):
        super().__init__()
        self.vlm_with_expert = SmolVLMWithExpert(
            vlm_config,
            num_vlm_layers=cfg["num_vlm_layers"],
            num_expert_layers=cfg["num_expert_layers"],
            self_attn_every_n_layers=cfg["self_attn_every_n_layers"],
            expert_width_multiplier=cfg["expert_width_multiplier"],
            attention_mode=cfg["attention_mode"],
        )
        d, de = vlm_config.text_config.hidden_size, self.vlm_with_expert.expert_hidden_size
        self.state_proj = nn.Linear(cfg["max_state_dim"], d)
        self.action_in_proj = nn.Linear(cfg["max_action_dim"], de)
        self.action_out_proj = nn.Linear(de, cfg["max_action_dim"])
        self.action_time_mlp_in = nn.Linear(2 * de, de)
        self.action_time_mlp_out = nn.Linear(de, de)


# LeRobot SmolVLAConfig defaults (the fields this adapter reads)
DEFAULTS: dict[str, Any] = {
    "type": "smolvla",
    "n_obs_steps": 1,
    "chunk_size": 50,
    "n_action_steps": 50,
    "max_state_dim": 32,
    "max_action_dim": 32,
    "resize_imgs_with_padding": [512, 512],
    "tokenizer_max_length": 48,
    "num_steps": 10,
    "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "attention_mode": "cross_attn",
    "add_image_special_tokens": False,
    "prefix_length": -1,
    "num_expert_layers": -1,
    "num_vlm_layers": 16,
    "self_attn_every_n_layers": 2,
    "expert_width_multiplier": 0.75,
    "min_period": 4e-3,
    "max_period": 4.0,
    "empty_cameras": 0,
    "adapt_to_pi_aloha": False,
    "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
}


class SmolVLAModel(PrefixLayers, nn.Module):
    """SmolVLA with :class:`harness.anatomy.VLAAnatomy`. ``config``: LeRobot's policy ``config.json`` (dict);
    ``vlm_config``: the VLM's transformers config; ``stats``: {"observation.state.mean": ..., "action.std": ...}."""

    def __init__(
        self,
        config: dict[str, Any],
        vlm_config: Any,
        tokenizer: Any,
        stats: dict[str, torch.Tensor],
        cameras: list[str] | None = None,
    ):
        super().__init__()
        cfg = {**DEFAULTS, **config}
        for key, ok in (("add_image_special_tokens", False), ("prefix_length", -1), ("adapt_to_pi_aloha", False)):
            if cfg[key] not in (ok, None) and not (key == "prefix_length" and cfg[key] <= 0):
                raise ValueError(f"SmolVLA option {key}={cfg[key]!r} is not supported by this adapter")
        nm = cfg["normalization_mapping"]
        if nm.get("STATE", "MEAN_STD") != "MEAN_STD" or nm.get("ACTION", "MEAN_STD") != "MEAN_STD":
            raise ValueError(f"only MEAN_STD normalisation of state and action is supported, got {nm}")
        self.cfg = cfg
        self.vlm_config = vlm_config
        self.model = FlowMatching(vlm_config, cfg)
        self.tokenizer = tokenizer
        feats = cfg.get("input_features") or {}
        self.image_keys = [k for k, v in feats.items() if str(v.get("type")).upper().endswith("VISUAL")]
        self.state_dim = int(
            next(
                (v["shape"][0] for k, v in feats.items() if str(v.get("type")).upper().endswith("STATE")),
                cfg["max_state_dim"],
            )
        )
        out = cfg.get("output_features") or {}
        self.action_dim = int(next((v["shape"][0] for v in out.values()), cfg["max_action_dim"]))
        self.cameras = list(cameras or [k.rsplit(".", 1)[-1] for k in self.image_keys])
        if self.image_keys and len(self.cameras) != len(self.image_keys):
            raise ValueError(
                f"{len(self.cameras)} cameras {self.cameras} for {len(self.image_keys)} image features "
                f"{self.image_keys}: set the adapter's `cameras` (one suite camera per image feature)"
            )
        self.chunk, self.max_action_dim = int(cfg["chunk_size"]), int(cfg["max_action_dim"])
        self.num_steps = int(cfg["num_steps"])
        tc = vlm_config.text_config
        self.n_heads, self.head_dim = tc.num_attention_heads, tc.head_dim
        self.set_stats(stats)

    def set_stats(self, stats: dict[str, torch.Tensor]) -> None:
        def get(key: str, n: int, fill: float) -> torch.Tensor:
            t = stats.get(key)
            return torch.full((n,), fill) if t is None else torch.as_tensor(t, dtype=torch.float32).flatten()

        for name, key, n, fill in (
            ("state_mean", "observation.state.mean", self.state_dim, 0.0),
            ("state_std", "observation.state.std", self.state_dim, 1.0),
            ("action_mean", "action.mean", self.action_dim, 0.0),
            ("action_std", "action.std", self.action_dim, 1.0),
        ):
            self.register_buffer(name, get(key, n, fill), persistent=False)

    # ----- anatomy: layers -----
    @property
    def vwe(self) -> SmolVLMWithExpert:
        return self.model.vlm_with_expert

    @property
    def n_layers(self) -> int:
        return self.vwe.num_vlm_layers

    def layer_modules(self, i: int) -> list[nn.Module]:
        e = self.vwe.expert_layer(i)
        return [self.vwe.vlm.model.text_model.layers[i]] + ([e] if e is not None else [])

    @property
    def device(self) -> torch.device:
        return self.model.state_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.state_proj.weight.dtype

    # ----- inputs -----
    def encode_instruction(self, instruction: str) -> torch.Tensor:
        text = instruction if instruction.endswith("\n") else instruction + "\n"  # SmolVLANewLineProcessor
        ids = self.tokenizer(text, max_length=int(self.cfg["tokenizer_max_length"]), truncation=True)["input_ids"]
        return torch.tensor([ids], dtype=torch.long)

    def noise(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(1, self.chunk, self.max_action_dim, generator=gen)

    def embed_prefix(
        self,
        images: dict[str, torch.Tensor],
        text: torch.Tensor,
        proprio: torch.Tensor,
        text_mask: torch.Tensor | None = None,
    ) -> PrefixState:
        vlm = self.vwe.vlm.model
        w, h = self.cfg["resize_imgs_with_padding"]
        parts, spans_v, start = [], {}, 0
        for cam in self.cameras:
            img = resize_with_pad(image_to_float(images[cam], self.device), int(w), int(h), pad_value=0.0) * 2 - 1
            emb = vlm.vision_model(pixel_values=img.to(self.dtype)).last_hidden_state
            emb = vlm.connector(emb)
            emb = emb * torch.tensor(emb.shape[-1] ** 0.5, dtype=emb.dtype, device=emb.device)
            parts.append(emb)
            spans_v[cam] = (start, start + emb.shape[1])
            start += emb.shape[1]
        text = text.to(self.device)
        lang = vlm.text_model.get_input_embeddings()(text)
        parts.append(lang * math.sqrt(lang.shape[-1]))
        lang_span = (start, start + text.shape[1])
        start += text.shape[1]
        s = proprio.to(self.device).float()
        if s.shape[-1] != self.state_dim:
            raise ValueError(f"proprio has {s.shape[-1]} dims, the checkpoint's state has {self.state_dim}")
        s = (s - self.state_mean) / (self.state_std + 1e-8)
        s = F.pad(s, (0, self.cfg["max_state_dim"] - s.shape[-1]))
        parts.append(self.model.state_proj(s.to(self.dtype))[:, None])
        x = torch.cat(parts, dim=1)
        b, n, _ = x.shape
        spans = TokenSpans(vision=spans_v, language=lang_span, proprio=(start, start + 1))
        valid = None
        if text_mask is not None and not bool(text_mask.all()):
            valid = torch.ones(b, n, dtype=torch.bool, device=x.device)
            valid[:, lang_span[0] : lang_span[1]] = text_mask.bool().to(x.device)
        return PrefixState(x=x, ids=torch.arange(n, device=x.device).expand(b, n), spans=spans, valid=valid)

    # ----- VLM layers -----
    def _qkv(self, layer: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = h.shape
        at = layer.self_attn
        return (
            at.q_proj(h).view(b, n, -1, self.head_dim),
            at.k_proj(h).view(b, n, -1, self.head_dim),
            at.v_proj(h).view(b, n, -1, self.head_dim),
        )

    def _prefix_layer(  # forward_prefix: harness.anatomy.PrefixLayers
        self,
        i: int,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
        need_attn: bool,
        fill: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ):
        layer = self.vwe.vlm.model.text_model.layers[i]
        b, n, _ = x.shape
        q, k, v = self._qkv(layer, layer.input_layernorm(x))
        q, k = apply_rope(q, pos).transpose(1, 2), apply_rope(k, pos).transpose(1, 2)
        v = v.transpose(1, 2)
        if fill is not None:
            kc, vc, slots = fill
            k, v = kc.index_copy(2, slots, k), vc.index_copy(2, slots, v)
        a, w = attend(q, k, v, mask, need_attn)
        x = x + layer.self_attn.o_proj(a.transpose(1, 2).reshape(b, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x, k, v, w

    def _prefix_mask(self, state: PrefixState, k_ids: torch.Tensor, k_valid: torch.Tensor | None
                     ) -> torch.Tensor | None:
        """LeRobot's prefix pass (``fill_kv_cache=True``): bidirectional, the state token sees all, nobody sees it."""
        return prefix_mask(state.ids, k_ids, k_valid, causal=False, late_start=state.spans.proprio[0])

    # ----- action expert -----
    def expert_tokens(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.model
        a = m.action_in_proj(x_t)
        te = sinusoidal(t, a.shape[-1], self.cfg["min_period"], self.cfg["max_period"]).to(a.dtype)
        te = te[:, None, :].expand_as(a)
        return m.action_time_mlp_out(F.silu(m.action_time_mlp_in(torch.cat([a, te], dim=2))))

    def velocity(
        self,
        state: PrefixState,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        skip: frozenset[int] | set[int] = frozenset(),
        need_attn: bool = False,
        attn_out: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One denoising step's velocity (LeRobot's ``denoise_step``) in normalised, padded action units."""
        h = self.expert_tokens(x_t, t)
        b, L, _ = h.shape
        n0 = int(state.spans.n_tokens)  # LeRobot: prefix_offsets = number of (valid) prefix tokens
        dev = h.device
        self_pos = (n0 + torch.arange(L, device=dev))[None].expand(b, L)
        cross_pos = torch.arange(L, device=dev)[None].expand(b, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        for i in range(self.n_layers):
            el = self.vwe.expert_layer(i)
            if i in skip or i not in state.kv or el is None:
                continue
            kp, vp = state.kv[i]
            if kp.shape[0] != b:
                kp, vp = kp.expand(b, -1, -1, -1), vp.expand(b, -1, -1, -1)
            n = kp.shape[2]
            valid = state.kv_valid.get(i)
            pre = None if valid is None else valid.expand(b, -1)
            q, k, v = self._qkv(el, el.input_layernorm(h)) if not self.vwe.is_cross(i) else (None, None, None)
            if self.vwe.is_cross(i):
                at = el.self_attn
                q = apply_rope(at.q_proj(el.input_layernorm(h)).view(b, L, -1, self.head_dim), cross_pos)
                kk = at.k_proj(kp.transpose(1, 2).reshape(b, n, -1)).view(b, n, -1, self.head_dim).transpose(1, 2)
                vv = at.v_proj(vp.transpose(1, 2).reshape(b, n, -1)).view(b, n, -1, self.head_dim).transpose(1, 2)
                mask = None if pre is None else pre[:, None, None, :].expand(b, 1, L, n)
            else:
                q = apply_rope(q, self_pos)
                kk = torch.cat([kp, apply_rope(k, self_pos).transpose(1, 2)], dim=2)
                vv = torch.cat([vp, v.transpose(1, 2)], dim=2)
                pm = torch.ones(b, n, dtype=torch.bool, device=dev) if pre is None else pre
                mask = torch.cat([pm[:, None, :].expand(b, L, n), causal[None].expand(b, L, L)], dim=2)[:, None]
            a, w = attend(q.transpose(1, 2), kk, vv, mask, need_attn)
            if w is not None and attn_out is not None:
                attn_out[i] = w[..., :n]
            h = h + el.self_attn.o_proj(a.transpose(1, 2).reshape(b, L, -1))
            h = h + el.mlp(el.post_attention_layernorm(h))
        h = self.vwe.lm_expert.norm(h)
        return self.model.action_out_proj(h.to(self.model.action_out_proj.weight.dtype)).float()

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
        """Euler integration from noise (t=1) to actions (t=0) -> (B, chunk, action_dim) in the env's units."""
        b = state.x.shape[0]
        steps = steps or self.num_steps
        x = (noise if noise is not None else torch.randn(b, self.chunk, self.max_action_dim)).to(self.device)
        x = x.to(self.dtype)
        dt = -1.0 / steps
        for s in range(steps):
            t = torch.full((b,), 1.0 + s * dt, dtype=torch.float32, device=self.device)
            want = need_attn and s == steps - 1
            x = x + dt * self.velocity(state, x, t, skip=skip, need_attn=want, attn_out=attn_out if want else None).to(
                x.dtype
            )
        a = x[:, :, : self.action_dim].float()
        return a * self.action_std + self.action_mean

    def action_loss(
        self,
        state: PrefixState,
        actions: torch.Tensor,
        *,
        skip: frozenset[int] | set[int] = frozenset(),
        generator: torch.Generator | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """LeRobot's flow-matching loss: MSE(v, noise - a) at t ~ 0.001 + 0.999·Beta(1.5, 1), on the real dims."""
        a = (actions.to(self.device).float() - self.action_mean) / (self.action_std + 1e-8)
        a = F.pad(a, (0, self.max_action_dim - a.shape[-1]))
        b = a.shape[0]
        noise = torch.randn(a.shape, generator=generator).to(a.device)
        u = torch.rand(b, generator=generator).to(a.device)
        t = 0.001 + 0.999 * u ** (1 / 1.5)  # inverse CDF of Beta(1.5, 1)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
        v = self.velocity(state, x_t, t, skip=skip)
        return ((v - (noise - a)) ** 2)[:, :, : self.action_dim].mean()

    # ----- saving (LeRobot's policy folder layout) -----
    def save_pretrained(self, folder: str | Path, vlm_dir: str = "vlm") -> None:
        """config.json + model.safetensors (``model.*`` keys) + the normaliser files of LeRobot's processors; the
        VLM's config and tokenizer go to ``folder/vlm_dir`` (``vlm_model_name`` points there)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
            str(folder / "model.safetensors"),
            metadata={"format": "pt"},
        )
        cfg = dict(self.cfg, vlm_model_name=vlm_dir)
        (folder / "config.json").write_text(json.dumps(cfg, indent=1))
        pre = {
            "observation.state.mean": self.state_mean,
            "observation.state.std": self.state_std,
            "action.mean": self.action_mean,
            "action.std": self.action_std,
        }
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in pre.items()},
            str(folder / "policy_preprocessor_step_5_normalizer_processor.safetensors"),
        )
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in pre.items() if k.startswith("action")},
            str(folder / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"),
        )
        (folder / vlm_dir).mkdir(exist_ok=True)
        self.vlm_config.save_pretrained(str(folder / vlm_dir))
        self.tokenizer.save_pretrained(str(folder / vlm_dir))


# --------------------------------------------------------------------------------------------------
# building and loading
# --------------------------------------------------------------------------------------------------
def tiny_vlm_config(*, image_size: int = 32, layers: int = 8, width: int = 64, vocab: int = 256) -> Any:
    tf = require_transformers("smolvla")
    return tf.SmolVLMConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 4,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": width // 4,
            "vocab_size": vocab,
            "rope_theta": 100000.0,
            "max_position_embeddings": 512,
        },
        scale_factor=2,
        image_token_id=vocab - 1,
    )


def tiny_policy_config(
    *,
    cameras: list[str],
    image_hw: tuple[int, int],
    state_dim: int,
    action_dim: int,
    image_size: int = 32,
    vlm_layers: int = 6,
    chunk: int = 8,
    n_action_steps: int = 4,
    num_steps: int = 10,
) -> dict[str, Any]:
    feats: dict[str, Any] = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, *image_hw]} for c in cameras}
    feats["observation.state"] = {"type": "STATE", "shape": [state_dim]}
    return {
        **DEFAULTS,
        "chunk_size": chunk,
        "n_action_steps": n_action_steps,
        "max_state_dim": 8,
        "max_action_dim": 8,
        "resize_imgs_with_padding": [image_size, image_size],
        "num_steps": num_steps,
        "num_vlm_layers": vlm_layers,
        "vlm_model_name": "vlm",
        "input_features": feats,
        "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
        "vla_bench": {"tiny": True},
    }


def build_tiny(
    *,
    cameras: list[str],
    image_hw: tuple[int, int],
    state_dim: int,
    action_dim: int,
    texts: list[str],
    seed: int = 0,
    **sizes: Any,
) -> SmolVLAModel:
    from methods.openvla.common import word_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vc = tiny_vlm_config()
        cfg = tiny_policy_config(
            cameras=cameras, image_hw=image_hw, state_dim=state_dim, action_dim=action_dim, **sizes
        )
        model = SmolVLAModel(cfg, vc, word_tokenizer(texts, 256), {}, cameras=cameras)
    return model.eval()


def read_stats(folder: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalisation statistics: LeRobot >= 0.4 processor files, else the pre-0.4 buffers in model.safetensors."""
    from safetensors.torch import load_file

    stats: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*normalizer_processor*.safetensors")):
        stats.update(load_file(str(f)))
    old = {
        "normalize_inputs.buffer_observation_state.": "observation.state.",
        "unnormalize_outputs.buffer_action.": "action.",
    }
    for k, t in weights.items():
        for src, dst in old.items():
            if k.startswith(src):
                stats.setdefault(dst + k[len(src) :], t)
    return stats


def resolve_vlm(folder: Path, name: str, vlm_path: str = "") -> Path:
    """The VLM's config/tokenizer folder: ``vlm_path``, else ``folder/name``, else the local HF cache (no network)."""
    for cand in ([Path(vlm_path)] if vlm_path else []) + [folder / name, Path(name)]:
        if (cand / "config.json").exists():
            return cand
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True, allow_patterns=["*.json", "*.txt", "*.model"]))
    except Exception as e:
        raise FileNotFoundError(
            f"the VLM config/tokenizer {name!r} is not on this machine: download it (`huggingface-cli download "
            f"{name} --exclude '*.safetensors'`) and set vlm_path, or put it in {folder / 'vlm'}"
        ) from e


def load_smolvla(
    folder: str | Path,
    *,
    vlm_path: str = "",
    cameras: list[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SmolVLAModel:
    """Load a local LeRobot SmolVLA policy folder (``huggingface-cli download lerobot/smolvla_base --local-dir D``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder}: needs config.json and model.safetensors (a LeRobot SmolVLA folder)")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("type", "smolvla") != "smolvla":
        raise ValueError(f"{folder}: policy type {cfg.get('type')!r} is not smolvla")
    tf = require_transformers("smolvla")
    vdir = resolve_vlm(folder, cfg.get("vlm_model_name", DEFAULTS["vlm_model_name"]), vlm_path)
    vc = tf.AutoConfig.from_pretrained(str(vdir))
    tok = tf.AutoTokenizer.from_pretrained(str(vdir))
    weights = load_file(str(folder / "model.safetensors"))
    model = SmolVLAModel(cfg, vc, tok, read_stats(folder, weights), cameras=cameras)
    own = model.state_dict()
    sd = {k: v for k, v in weights.items() if k in own}
    unexpected = [k for k in weights if k not in own and not k.startswith(("normalize_", "unnormalize_"))]
    missing = [k for k in own if k not in sd]
    if [k for k in missing if not k.endswith("lm_head.weight")] or unexpected:
        raise ValueError(
            f"{folder}: weights do not match the SmolVLA layout: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(sd, strict=False)
    return model.to(device=device, dtype=dtype).eval()


def lerobot_policy(folder: str | Path) -> Any:
    """LeRobot's own ``SmolVLAPolicy.from_pretrained`` (for cross-checking this adapter on a machine where lerobot
    imports: ``pip install lerobot[smolvla]`` with its own torch). Not used by the benchmark."""
    try:
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy  # type: ignore[import-not-found]
    except Exception as e:
        raise ImportError(
            f"lerobot's SmolVLA cannot be imported here ({type(e).__name__}: {e}); see methods/smolvla/README.md"
        ) from e
    return SmolVLAPolicy.from_pretrained(str(folder))
