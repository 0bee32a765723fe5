from dataclasses import dataclass

from harness.interfaces import MethodConfig


@dataclass
class MockConfig(MethodConfig):
    """Mock policy: a tiny transformer over image patches plus a colour read-out of the instructed target."""

    dim: int = 32
    depth: int = 2
    heads: int = 2
    patch: int = 4
    chunk: int = 4  # actions per infer call
    n_execute: int = 2  # actions executed before the next call
    noise: float = 0.35  # exploration noise, seeded per episode
    ignore_instruction: bool = False  # "broken": always heads for the first target it sees
    delay_s: float = 0.0  # sleep per infer call (tests: a slow policy to kill mid-run)
    spin_s: float = 0.0  # busy CPU time per infer call (benchmarks: a CPU-bound policy)
    fault: str = "none"  # none | nan | wrong_shape | raise | exit — for the harness's failure-path tests
    fault_seed: int = -1  # fault "exit": os._exit(1) (the worker process dies) at reset of the episode with this seed
