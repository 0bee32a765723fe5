from harness.plugins import alias_method, register_method

register_method("reference", "methods.reference.adapter:ReferenceMethod",
                "the project's reference VLA teacher (pi0-style: conv-stem tokens, 18-block backbone, flow-matching "
                "action expert; BC on the suite's expert demos); variants: flow, regression, discrete, text",
                variants=["flow", "regression", "discrete", "text", "notext"])
# `make bench METHOD=teacher SUITE=...`: the 1.00x reference row of every table (its distill returns itself)
alias_method("teacher", "reference")
