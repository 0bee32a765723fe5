from dataclasses import dataclass, field

from harness.interfaces import MethodConfig


@dataclass
class SmolVLAConfig(MethodConfig):
    """SmolVLA adapter settings. Weights: a local LeRobot SmolVLA policy folder (``checkpoint``, or the environment
    variable VLA_BENCH_SMOLVLA_CHECKPOINT); ``tiny`` builds a random tiny model sized to the suite."""

    checkpoint: str = ""  # folder with config.json, model.safetensors (+ LeRobot's normaliser files)
    vlm_path: str = ""  # the VLM's config + tokenizer (SmolVLM2-500M-Video-Instruct); "" = <checkpoint>/vlm or HF cache
    tiny: bool = False  # random tiny model (tests, smoke runs of the pipeline); never a real figure
    cameras: list = field(default_factory=list)  # suite cameras, one per image feature of the checkpoint, in order
    n_execute: int = 0  # actions executed per call; 0 = the checkpoint's n_action_steps
    flow_steps: int = 0  # Euler steps; 0 = the checkpoint's num_steps (10)
    dtype: str = "auto"  # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16
    gripper: str = "none"  # none | binarize
    clip: float = 0.0  # clip actions to [-clip, clip]; 0 = no clipping (the env's bounds apply)
    tiny_layers: int = 6  # tiny model: VLM layers used (of 8) = expert layers
    tiny_chunk: int = 8  # tiny model: chunk size
