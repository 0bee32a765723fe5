from harness.plugins import register_method

register_method("remote", "methods.remote.adapter:RemoteMethod",
                "a policy served by `vla-bench serve` in another process/venv/machine (--set address=HOST:PORT)")
