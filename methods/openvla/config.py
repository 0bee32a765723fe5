from dataclasses import dataclass

from harness.interfaces import MethodConfig


@dataclass
class OpenVLAConfig(MethodConfig):
    """OpenVLA adapter settings. Weights: a local copy of an OpenVLA Hugging Face checkpoint (``checkpoint``, or the
    environment variable VLA_BENCH_OPENVLA_CHECKPOINT); ``tiny`` builds a random tiny model sized to the suite."""

    checkpoint: str = ""  # folder with config.json, tokenizer files and model*.safetensors
    tiny: bool = False  # random tiny model (tests, smoke runs of the pipeline); never a real figure
    unnorm_key: str = ""  # norm_stats key; "" = the only one, else the suite id without "-vN" (libero_object)
    camera: str = ""  # the suite camera fed to the model ("" = the suite's first camera)
    center_crop: bool = False  # OpenVLA's eval-time 90 %-area centre crop (checkpoints trained with random crops)
    dtype: str = "auto"  # auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16 | float16
    gripper: str = "none"  # none | binarize | openvla_libero ([0,1] -> sign(2g-1), inverted: LIBERO's convention)
    clip: float = 0.0  # clip actions to [-clip, clip]; 0 = no clipping (the env's bounds apply)
    n_execute: int = 1  # OpenVLA predicts one action per call
    tiny_layers: int = 6  # tiny model: Llama layers
    tiny_width: int = 64  # tiny model: Llama width
    tiny_image_size: int = 32  # tiny model: ViT input size (patch 8 -> 4x4 tokens)
