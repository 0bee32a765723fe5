from dataclasses import dataclass

from harness.interfaces import MethodConfig

#: fields that only change inference (not the trained student): left out of the artifact's cache key
INFERENCE_ONLY = ("prune_keep", "prune_after", "threads", "minutes", "save_every")


@dataclass
class ShallowPiConfig(MethodConfig):
    """Shallow-pi: the student keeps ``keep_blocks`` of the teacher's backbone blocks *and* action-expert blocks."""

    keep_blocks: int = 6  # 18 -> 6 (the paper's setting); variants keep9 / keep4 / keep3
    init_layers: str = "uniform"  # uniform: round(linspace(0, L-1, k)) (first and last kept) | every: 0, s, 2s, ...
    #                               | explicit comma list "0,3,7,10,14,17"
    steps: int = 3000  # optimizer steps (cosine schedule)
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    w_gt: float = 1.0  # flow-matching loss on the demonstrations' actions
    w_kd: float = 1.0  # MSE to the teacher's velocity at the same (x_t, t, observation)
    w_attn: float = 1.0  # attention transfer: KL(teacher || student) of action-query -> prefix attention, paired layers
    lang_weight: float = 0.3  # commentary cross-entropy when the teacher has a language head (driving)
    augment: bool = True  # the teacher's random-shift + colour jitter
    minutes: float = 0.0  # wall-clock budget of one distillation call; 0 = until done (it resumes either way)
    save_every: int = 200  # training state saved every this many steps (resume)
    threads: int = 1  # torch threads while distilling (the machine is shared)
    prune_keep: float = 1.0  # < 1: compose with FastV on the student (share of vision tokens kept)
    prune_after: int = 1  # FastV's K on the student's blocks
