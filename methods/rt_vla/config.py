from dataclasses import asdict, dataclass, field

from harness.interfaces import MethodConfig

#: config fields that are not part of the artifact identity (inference settings; wall budget and threads of training)
INFERENCE_ONLY = ("generate_text", "n_execute", "text_max_len", "threads", "minutes", "save_every")


@dataclass
class RTVLAConfig(MethodConfig):
    """RT-VLA: multi-level supervised distillation of the reasoning teacher into a compact student.

    Loss = w_output·L1(student chunk, teacher chunk) + w_gt·L1(student chunk, expert chunk)
         + w_feature·MSE(proj(student pooled), teacher pooled prefix features)
         + w_language·CE(student commentary decoder, teacher-generated commentary tokens).
    """

    # student size
    width: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 48])
    grid: int = 4
    fuse_layers: int = 2
    lang_layers: int = 1
    # multi-level distillation weights
    w_output: float = 1.0
    w_gt: float = 0.5
    w_feature: float = 0.5
    w_language: float = 0.3
    # training
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    augment: bool = True
    frame_stride: int = 2  # teacher targets on every n-th demo frame (bounds the teacher-cache cost)
    max_frames: int = 8000
    threads: int = 2
    minutes: float = 60.0  # wall budget of one call (rerun resumes)
    save_every: int = 250
    # inference
    generate_text: bool = False  # vision+language mode: generate the commentary in every infer call
    n_execute: int = 2
    text_max_len: int = 0

    def artifact_identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in INFERENCE_ONLY}
