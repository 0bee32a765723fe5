"""vla-bench harness: registries, interfaces, runner, results store, profilers and CLI."""
__version__ = "0.1.0"
