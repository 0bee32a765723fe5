from dataclasses import asdict, dataclass, field

from harness.interfaces import MethodConfig

INFERENCE_ONLY = ("n_execute", "stage", "threads", "minutes", "save_every")


@dataclass
class LatentVLAConfig(MethodConfig):
    """LatentVLA: latent actions from unlabelled frames -> a VLA pretrained on them, fine-tuned on actions ->
    knowledge distillation into a compact vision(+command) network for real-time control."""

    # stage 0: latent action model (unlabelled frame pairs t, t+k)
    lam_k: int = 4
    lam_codes: int = 16
    lam_latent_dim: int = 32
    lam_steps: int = 1500
    lam_batch: int = 64
    # stage 1-2: the VLA (initialised from the suite's reference teacher) with a latent-token head
    latent_tokens: int = 2  # predicts the codes of (t, t+k), (t+k, t+2k), ...
    latent_steps: int = 200  # stage 1: latent-token pretraining
    action_steps: int = 200  # stage 2: action fine-tuning (flow loss + latent loss)
    latent_weight_finetune: float = 0.1
    vla_lr: float = 1e-4
    vla_batch: int = 32
    # stage 3: distillation into the compact student (output + feature levels + ground truth)
    width: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 48])
    grid: int = 4
    fuse_layers: int = 2
    w_output: float = 1.0
    w_gt: float = 0.5
    w_feature: float = 0.5
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    frame_stride: int = 2
    max_frames: int = 8000
    threads: int = 2
    minutes: float = 60.0
    # inference
    stage: str = "student"  # student (deployed network) | vla (the latent-pretrained VLA itself)
    n_execute: int = 2

    def artifact_identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in INFERENCE_ONLY}
