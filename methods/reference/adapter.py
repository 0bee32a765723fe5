"""Method `reference`: loads the committed reference teacher for the suite (trained by `make teacher`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.anatomy import AnatomyPolicy, PrefixState
from harness.interfaces import DataSource, Method, MissingArtifactError, Policy
from methods.reference import checkpoint as ckpt
from methods.reference.config import ReferenceConfig
from methods.reference.model import ReferenceVLA, WordTokenizer


class MissingCheckpointError(MissingArtifactError):
    pass


class ReferencePolicy(AnatomyPolicy):
    """The reference VLA as a Policy. Compression methods reach the model through ``.model`` (the anatomy,
    :mod:`harness.anatomy`) and turn observations into its inputs with :meth:`inputs`."""

    def __init__(self, model: ReferenceVLA, tok: WordTokenizer, lang_tok: WordTokenizer | None,
                 manifest: dict[str, Any], cfg: ReferenceConfig):
        mc = model.cfg
        super().__init__(model, cfg, n_execute=min(cfg.n_execute, mc.chunk), flow_steps=cfg.flow_steps or mc.flow_steps)
        self.tok, self.lang_tok, self.manifest = tok, lang_tok, manifest
        self.generate = bool(cfg.generate_text and mc.lang_head and lang_tok is not None)

    def encode_text(self, instruction: str) -> torch.Tensor:
        ids = self.tok.encode(instruction, self.model.cfg.max_text_len) or [1]
        return torch.tensor([ids], dtype=torch.long)

    def inputs(self, obs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """obs -> (images {cam: uint8 (1,H,W,3)}, text ids (1,T), proprio (1,P)) for ``model.embed_prefix``."""
        images = {c: torch.from_numpy(np.ascontiguousarray(obs["images"][c]))[None] for c in self.model.cfg.cameras}
        proprio = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32))[None]
        return images, self.text_ids(obs["instruction"]), proprio

    def noise(self) -> torch.Tensor:
        mc = self.model.cfg
        return torch.randn(1, mc.chunk, mc.action_dim, generator=self.gen)

    def postprocess(self, actions: torch.Tensor) -> np.ndarray:
        a = actions[0].detach().cpu().numpy().astype(np.float32)
        if self.cfg.binarize_gripper:
            a[:, -1] = np.where(a[:, -1] >= 0, 1.0, -1.0)
        if self.cfg.clip > 0:
            a = np.clip(a, -self.cfg.clip, self.cfg.clip)
        return a

    def commentary(self, state: PrefixState) -> str:
        return self.lang_tok.decode(self.model.generate_text(state, self.cfg.text_max_len or None)[0])


class ReferenceMethod(Method):
    name = "reference"
    config_cls = ReferenceConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "flow": {"head": "flow"},
        "regression": {"head": "regression"},
        "discrete": {"head": "discrete"},
        "text": {"generate_text": True},
        "notext": {"generate_text": False},
    }

    def checkpoint_folder(self, suite_id: str, config: ReferenceConfig) -> Path:
        """The suite's own folder, else a folder whose manifest ``serves`` it (e.g. the ``driving`` group teacher,
        trained on all four scenarios, serves each ``driving_<scenario>-v1``)."""
        if config.checkpoint:
            return Path(config.checkpoint)
        own = ckpt.checkpoint_dir(suite_id, config.head)
        if (own / ckpt.MANIFEST).exists():
            return own
        for manifest in sorted(ckpt.CHECKPOINTS.glob(f"*/{ckpt.MANIFEST}")):
            try:
                m = ckpt.read_manifest(manifest.parent)
            except (OSError, ValueError):
                continue
            if suite_id in m.get("serves", []) and m.get("head", "flow") == config.head:
                return manifest.parent
        return own

    def distill(self, teacher: Policy | None, data: DataSource, config: ReferenceConfig) -> Policy:
        suite_id = data.suite.suite_id
        folder = self.checkpoint_folder(suite_id, config)
        if not (folder / ckpt.MANIFEST).exists():
            head = "" if config.head == "flow" else f" HEAD={config.head}"
            raise MissingCheckpointError(
                f"no reference checkpoint for {suite_id!r} (looked in {folder}); train it with "
                f"`make teacher SUITE={suite_id}{head}`")
        model, tok, lang_tok, manifest = ckpt.load(folder)
        return ReferencePolicy(model, tok, lang_tok, manifest, config)
