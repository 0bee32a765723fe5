"""Shared by the real-checkpoint adapters (``openvla``, ``smolvla``): the optional-dependency guard, attention
with grouped K/V, position-based prefix masks, suite probing for tiny models, and the policy wrapper that gives
compression methods the reference-policy helpers (``model``, ``inputs``, ``noise``, ``postprocess``).

Nothing here imports transformers at module import time (plugins stay cheap)."""

from __future__ import annotations

import functools
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harness.anatomy import AnatomyPolicy
from harness.interfaces import DataSource, MissingArtifactError, Policy

TRANSFORMERS_MIN = "4.50"  # SmolVLM, Dinov2WithRegisters and Siglip config classes


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip command."""


def require_transformers(extra: str) -> Any:
    """Import transformers or fail with the install command for ``extra`` (``openvla`` / ``smolvla``)."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching sys.modules in the tests
        raise MissingExtraError(
            f"the {extra} adapter needs Hugging Face transformers>={TRANSFORMERS_MIN}: "
            f"pip install -e .[{extra}] torch==2.13.0   (or: make setup EXTRAS={extra})"
        ) from e
    return transformers


class MissingCheckpointError(MissingArtifactError):
    pass


# --------------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------------
def expand_kv(k: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, Hkv, L, D) -> (B, n_heads, L, D) for grouped-query attention (what HF's ``repeat_kv`` does)."""
    if k.shape[1] == n_heads:
        return k
    return k.repeat_interleave(n_heads // k.shape[1], dim=1)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    need_weights: bool,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q (B,H,Lq,D), k/v (B,Hkv,Lk,D); ``mask`` bool (True = may attend) broadcastable to (B,H,Lq,Lk).

    SDPA unless attention maps are requested (then QKᵀ, softmax in float32, AV — the same matmul FLOPs)."""
    k, v = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), None
    s = (q @ k.transpose(-2, -1)).float() * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = s.softmax(dim=-1).to(v.dtype)
    return w @ v, w


def prefix_mask(
    q_ids: torch.Tensor,
    k_ids: torch.Tensor,
    k_valid: torch.Tensor | None,
    *,
    causal: bool,
    late_start: int | None = None,
) -> torch.Tensor | None:
    """(B, 1, Lq, Lk) bool mask from ORIGINAL positions (so it stays right after pruning or with KV reuse).

    ``causal``: key j visible iff pos(j) <= pos(i) (Llama / OpenVLA). ``late_start``: block-causal (pi0 / SmolVLA):
    tokens at positions >= late_start (the state token) see everything, earlier tokens do not see them."""
    b = q_ids.shape[0]
    m: torch.Tensor | None = None
    if causal:
        m = k_ids[:, None, :] <= q_ids[:, :, None]
    elif late_start is not None:
        gq, gk = (q_ids >= late_start).long(), (k_ids >= late_start).long()
        m = gk[:, None, :] <= gq[:, :, None]
    if k_valid is not None:
        kv = k_valid[:, None, :].expand(b, q_ids.shape[1], -1)
        m = kv if m is None else (m & kv)
    return None if m is None else m[:, None]


# --------------------------------------------------------------------------------------------------
# suites
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteShapes:
    cameras: tuple[str, ...]
    image_hw: tuple[int, int]
    proprio_dim: int
    action_dim: int
    instructions: tuple[str, ...]


@functools.lru_cache(maxsize=8)
def _probe(suite_id: str) -> SuiteShapes:
    from harness.plugins import make_suite

    suite = make_suite(suite_id)
    ep = suite.episodes("smoke")[0]
    env = suite.make_env(ep.task)
    try:
        obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
        cams = tuple(obs["images"])
        h, w = obs["images"][cams[0]].shape[:2]
        return SuiteShapes(
            cams,
            (int(h), int(w)),
            int(np.asarray(obs["proprio"]).size),
            int(np.prod(env.action_space.shape)),
            tuple(t.instruction for t in suite.tasks()),
        )
    finally:
        env.close()


def probe_suite(suite: Any) -> SuiteShapes:
    """Cameras, image size, proprio and action sizes of a suite, read from one reset of its first smoke episode
    (only tiny random-weight models need this; real checkpoints fix their own sizes)."""
    return _probe(suite.suite_id)


# --------------------------------------------------------------------------------------------------
# the policy wrapper
# --------------------------------------------------------------------------------------------------
class AdapterPolicy(AnatomyPolicy):
    """A real-checkpoint adapter as a Policy with the reference-policy helpers the compression methods use
    (``methods/token_pruning``); see :class:`harness.anatomy.AnatomyPolicy`."""

    def __init__(self, model: Any, cfg: Any, *, n_execute: int, flow_steps: int = 0, cameras: tuple[str, ...]):
        super().__init__(model, cfg, n_execute=n_execute, flow_steps=flow_steps or None)
        self.cameras = cameras

    def encode_text(self, instruction: str) -> torch.Tensor:
        return self.model.encode_instruction(instruction)

    def inputs(self, obs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """obs -> (images {cam: uint8 (1,H,W,3)}, text ids (1,T), proprio (1,P)) on the CPU; the model moves them
        to its own device in ``embed_prefix``."""
        missing = [c for c in self.cameras if c not in obs["images"]]
        if missing:
            raise KeyError(
                f"camera(s) {missing} not in the observation (has {sorted(obs['images'])}); "
                f"set the adapter's `cameras` config"
            )
        images = {c: torch.from_numpy(np.ascontiguousarray(obs["images"][c]))[None] for c in self.cameras}
        proprio = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32)).reshape(1, -1)
        return images, self.text_ids(obs["instruction"]), proprio

    def noise(self) -> torch.Tensor | None:
        return self.model.noise(self.gen)

    def postprocess(self, actions: torch.Tensor) -> np.ndarray:
        a = actions[0].detach().float().cpu().numpy().astype(np.float32)
        g = getattr(self.cfg, "gripper", "none")
        if g == "openvla_libero":  # OpenVLA's LIBERO eval: [0, 1] -> [-1, 1], binarise, invert (open = -1)
            a[:, -1] = -np.sign(2.0 * a[:, -1] - 1.0)
        elif g == "binarize":
            a[:, -1] = np.where(a[:, -1] >= 0, 1.0, -1.0)
        elif g != "none":
            raise ValueError(f"gripper must be none | binarize | openvla_libero, got {g!r}")
        if self.cfg.clip > 0:
            a = np.clip(a, -self.cfg.clip, self.cfg.clip)
        return a


class AdapterMethod(ABC):
    """Mixin (before :class:`Method`): ``distill`` of a real-checkpoint adapter (nothing is trained): ``@tiny``
    builds a random tiny model for the suite (``tiny_model``), else the local checkpoint (``checkpoint`` or
    ``env_var``) is loaded (``load_model``); ``policy`` wraps the model."""

    name: ClassVar[str]
    variants: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"tiny": True}}
    label: ClassVar[str]  # the model's name in messages
    env_var: ClassVar[str]  # the environment variable naming the checkpoint folder
    checkpoint_hint: ClassVar[str]  # "<name> needs ...": what to download

    @abstractmethod
    def tiny_model(self, suite: Any, config: Any) -> Any:
        """A random tiny model for ``suite``."""

    @abstractmethod
    def load_model(self, path: str, data: DataSource, config: Any) -> Any:
        """The checkpoint at ``path``."""

    @abstractmethod
    def policy(self, model: Any, config: Any) -> Policy:
        """The model as this adapter's policy."""

    def distill(self, teacher: Policy | None, data: DataSource, config: Any) -> Policy:
        require_transformers(self.name)
        suite = data.suite
        if config.tiny:
            model = self.tiny_model(suite, config)
            print(
                f"[{self.name}] tiny random-weight {self.label} ({sum(p.numel() for p in model.parameters())} params) "
                f"for {suite.suite_id}: exercises the pipeline, its success rate means nothing",
                file=sys.stderr,
            )
        else:
            path = resolve_checkpoint(config.checkpoint, self.env_var)
            if not path:
                raise MissingCheckpointError(
                    f"{self.name} needs {self.checkpoint_hint}, then `--set checkpoint=D` or `export {self.env_var}=D`; "
                    f"`{self.name}@tiny` runs a random tiny model instead"
                )
            model = self.load_model(path, data, config)
        return self.policy(model, config)


def word_tokenizer(texts: list[str], size: int, extra: tuple[str, ...] = ()) -> Any:
    """A lower-cased word-level ``tokenizers`` tokenizer wrapped as a transformers fast tokenizer (saved and
    reloaded with ``save_pretrained``/``AutoTokenizer``, like a real checkpoint's): ids 0-3 are
    ``<unk> <s> </s>`` + ``extra``, then the words of ``texts``, then ``<unusedN>`` up to ``size``."""
    import re

    require_transformers("tokenizer")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words: dict[str, None] = {}
    for t in texts:
        for w in re.findall(r"\w+|[^\w\s]", t.lower()):
            words.setdefault(w, None)
    vocab = ["<unk>", "<s>", "</s>", *extra]
    vocab += [w for w in sorted(words) if w not in vocab]
    vocab = vocab[: size // 2]
    vocab += [f"<unused{i}>" for i in range(size - len(vocab))]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    )


def resolve_checkpoint(configured: str, env_var: str) -> str:
    import os

    return configured or os.environ.get(env_var, "")


def image_to_float(img: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [0, 1] on ``device``."""
    return img.to(device).permute(0, 3, 1, 2).to(dtype).div(255.0)
