"""Method `rt_vla`: the compact student distilled from the reasoning teacher. Variants: `rt_vla` (vision-only:
actions only; the commentary decoder never runs) and `rt_vla@vision_language` (also generates the commentary in
every call)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.interfaces import ActionChunk, DataSource, Method, Policy, Task
from methods.rt_vla.config import RTVLAConfig
from methods.rt_vla.student import CompactStudent


class RTPolicy(Policy):
    def __init__(self, student: CompactStudent, manifest: dict[str, Any], cfg: RTVLAConfig, folder: Path):
        from methods.reference.model import WordTokenizer

        self.student, self.manifest, self.cfg, self.folder = student.eval(), manifest, cfg, folder
        self.tok = WordTokenizer(manifest["tokenizer"]["vocab"])
        lt = manifest.get("lang_tokenizer")
        self.lang_tok = WordTokenizer(lt["vocab"]) if lt else None
        self.generate = bool(cfg.generate_text and student.cfg.lang_head and self.lang_tok is not None)
        if cfg.generate_text and not self.generate:
            raise ValueError("rt_vla@vision_language needs a teacher with a language head (driving); "
                             "this student has no commentary decoder")
        self.n_execute = max(1, min(cfg.n_execute, student.cfg.chunk))
        self.actions_per_call = float(self.n_execute)
        self._text_key: str | None = None
        self.calls = 0
        self.texts: list[str] = []

    def modules(self) -> list[torch.nn.Module]:
        return [self.student]

    def reset(self, task: Task, seed: int) -> None:
        self.calls, self.texts = 0, []

    def _text(self, instruction: str) -> torch.Tensor:
        if self._text_key != instruction:
            ids = self.tok.encode(instruction, 24) or [1]
            self._text_ids, self._text_key = torch.tensor([ids]), instruction
        return self._text_ids

    def infer(self, obs: dict[str, Any]) -> ActionChunk:
        self.calls += 1
        s = self.student
        with torch.inference_mode():
            images = {c: torch.from_numpy(np.ascontiguousarray(obs["images"][c]))[None] for c in s.cfg.cameras}
            proprio = torch.as_tensor(np.asarray(obs["proprio"], dtype=np.float32))[None]
            tokens = s.encode(images, self._text(obs["instruction"]), proprio)
            actions = s.actions(tokens)[0].numpy().astype(np.float32)
            extras: dict[str, Any] = {}
            if self.generate:
                text = self.lang_tok.decode(s.generate(tokens, self.cfg.text_max_len or None)[0])
                extras["text"] = text
                self.texts.append(text)
        return ActionChunk(actions, n_execute=self.n_execute, extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"infer_calls": self.calls, "language_decoder_runs": len(self.texts)}
        if self.texts:
            out["commentary_first"] = self.texts[0]
            out["commentary_last"] = self.texts[-1]
        return out


class RTVLAMethod(Method):
    name = "rt_vla"
    config_cls = RTVLAConfig
    needs_teacher = True
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "vision_language": {"generate_text": True},
        "vision_only": {"generate_text": False},
        # a narrower, shallower student (speed end of the curve; vision-only)
        "small": {"width": 32, "channels": [8, 16, 24], "fuse_layers": 1, "lang_layers": 1},
    }

    def distill(self, teacher: Policy | None, data: DataSource, config: RTVLAConfig) -> Policy:
        from methods.rt_vla.distill import distill, load

        if teacher is None or not hasattr(teacher, "model"):
            raise ValueError("rt_vla distils a reference VLA teacher (methods/reference); got "
                             f"{type(teacher).__name__}")
        folder = distill(teacher, data.suite, data.cache_dir, config)
        student, manifest = load(folder)
        return RTPolicy(student, manifest, config, folder)
