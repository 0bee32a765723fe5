from harness.plugins import register_method

register_method("expert", "methods.expert.adapter:ExpertMethod",
                "the suite's privileged scripted expert (reads simulator state): demonstrator and ceiling row")
