from harness.plugins import register_method

register_method("actdistill", "methods.actdistill.adapter:ActDistillMethod",
                "ActDistill: action-guided self-derived distillation with a dynamic per-layer router (blocks skipped "
                "at inference) and training-only graph encapsulation; variants: nograph, static, uniform, budget<r>",
                variants=["nograph", "static", "uniform", "budget0.3", "budget0.5", "budget0.7"])
