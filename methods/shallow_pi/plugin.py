from harness.plugins import register_method

register_method("shallow_pi", "methods.shallow_pi.adapter:ShallowPiMethod",
                "Shallow-pi: layer-reduction distillation of the flow VLA (backbone + action expert 18 -> k blocks, "
                "init from teacher blocks; flow-matching + velocity KD + attention transfer); variants keep<k>, "
                "keep<k>+fastv<r>",
                variants=["keep9", "keep6", "keep4", "keep3", "keep6+fastv0.5"])
