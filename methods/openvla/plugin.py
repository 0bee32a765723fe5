from harness.plugins import register_method

register_method(
    "openvla",
    "methods.openvla.adapter:OpenVLAMethod",
    "OpenVLA (Prismatic: DINOv2+SigLIP -> projector -> Llama-2, 7 action tokens decoded from the LM head) "
    "from a local Hugging Face checkpoint via transformers; a teacher for token pruning "
    "(TEACHER=openvla); variant tiny = random tiny model sized to the suite",
    variants=["tiny"],
)
