from harness.plugins import register_method

register_method(
    "smolvla",
    "methods.smolvla.adapter:SmolVLAMethod",
    "SmolVLA (LeRobot; SmolVLM2 first 16 layers + interleaved cross/self-attention flow-matching expert) "
    "from a local LeRobot policy folder, rebuilt on transformers classes; a teacher for token pruning "
    "(TEACHER=smolvla); variant tiny = random tiny model sized to the suite",
    variants=["tiny"],
)
