from dataclasses import dataclass

from harness.interfaces import MethodConfig


@dataclass
class RemoteConfig(MethodConfig):
    """Client of a policy server (docs/scaleout.md). The served method's id and config digest come back in the
    handshake and are recorded in every episode's method_stats (``server_method``, ``server_config_digest``)."""

    address: str = "127.0.0.1:8765"  # host:port of `vla-bench serve`
    timeout_s: float = 120.0  # longest wait for one reply (a slow GPU model's first call included)
    connect_timeout_s: float = 10.0
    max_message_mb: float = 16.0  # must not exceed the server's --max-message-mb
    token_env: str = "VLA_BENCH_SERVER_TOKEN"  # the token is read from this variable, never stored in a config
    # spawn: start a server child process for this run instead of connecting to `address`
    spawn: bool = False
    spawn_method: str = "mock"  # method id the child serves
    spawn_suite: str = ""  # suite id the child builds the policy for ("" = the suite being run)
    spawn_python: str = ""  # interpreter of another venv / Python version ("" = this one)
    spawn_debug: bool = False
    spawn_max_batch: int = 1
    spawn_batch_window_ms: float = 2.0
