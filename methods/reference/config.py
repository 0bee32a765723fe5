from dataclasses import dataclass

from harness.interfaces import MethodConfig


@dataclass
class ReferenceConfig(MethodConfig):
    """Inference settings of the reference teacher. The architecture comes from the checkpoint's manifest."""

    head: str = "flow"  # which trained checkpoint: flow (pi0-style expert) | regression | discrete
    checkpoint: str = ""  # a checkpoint folder; "" = methods/reference/checkpoints/<suite id>[@<head>]
    n_execute: int = 4  # actions executed per infer call (of the checkpoint's chunk)
    flow_steps: int = 0  # Euler steps of the flow head; 0 = the checkpoint's value
    generate_text: bool = False  # run the language head (commentary) in every infer call
    text_max_len: int = 0  # 0 = the checkpoint's lang_max_len
    clip: float = 1.0  # clip actions to [-clip, clip]; 0 = no clipping
    binarize_gripper: bool = False  # last action dimension -> sign (LIBERO gripper -1/+1)
