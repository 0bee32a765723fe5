from harness.plugins import register_method

register_method("reference", "methods.reference.adapter:ReferenceMethod",
                "the project's reference VLA teacher (pi0-style: conv-stem tokens, 18-block backbone, flow-matching "
                "action expert; BC on the suite's expert demos); variants: flow, regression, discrete, text",
                variants=["flow", "regression", "discrete", "text", "notext"])
