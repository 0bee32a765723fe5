from harness.plugins import register_method

_KEEP = ["keep0.75", "keep0.5", "keep0.25", "keep0.1", "keep1.0"]

register_method("fastv", "methods.token_pruning.adapter:FastVMethod",
                "FastV (training-free): after block K drop the vision tokens that receive the least attention "
                "from the last token; variants keep<r>", variants=_KEEP)
register_method("sparsevlm", "methods.token_pruning.adapter:SparseVLMMethod",
                "SparseVLM (training-free): text-guided progressive vision-token pruning at several layers; "
                "variants keep<r>", variants=_KEEP)
register_method("vla_cache", "methods.token_pruning.adapter:VLACacheMethod",
                "VLA-Cache (training-free): reuse the previous control step's K/V of static, task-irrelevant "
                "vision patches; variants keep<r> (share of vision tokens always recomputed)", variants=_KEEP)
register_method("random", "methods.token_pruning.adapter:RandomPruneMethod",
                "random vision-token pruning after block K at the same budget (control, seeded per episode); "
                "variants keep<r>", variants=_KEEP)
