"""Method `remote`: the policy runs behind `vla-bench serve` (another process, venv, Python or machine); this
side only sends observations and receives action chunks (harness/server, docs/scaleout.md)."""
from __future__ import annotations

import os

from harness.interfaces import ConfigError, DataSource, Method, Policy
from methods.remote.config import RemoteConfig


class RemoteMethod(Method):
    name = "remote"
    config_cls = RemoteConfig

    def distill(self, teacher: Policy | None, data: DataSource, config: RemoteConfig) -> Policy:
        try:
            from harness.server.client import RemotePolicy, RemotePolicyError, parse_address, spawn_server
        except ImportError as e:
            raise ImportError(f"method remote needs the server extra: pip install -e '.[server]' ({e})") from e
        if config.max_message_mb <= 0:
            raise ConfigError(f"RemoteConfig.max_message_mb must be > 0, got {config.max_message_mb}")
        proc = None
        address = config.address
        if config.spawn:
            proc, address = spawn_server(config.spawn_method, config.spawn_suite or data.suite.suite_id,
                                         python=config.spawn_python, debug=config.spawn_debug,
                                         max_batch=config.spawn_max_batch,
                                         batch_window_ms=config.spawn_batch_window_ms)
        else:
            try:
                parse_address(address)
            except ValueError as e:
                raise ConfigError(f"RemoteConfig.address: {e}") from None
        policy = RemotePolicy(address, timeout_s=config.timeout_s, connect_timeout_s=config.connect_timeout_s,
                              max_message_bytes=int(config.max_message_mb * 2**20),
                              token=os.environ.get(config.token_env) or None, server_process=proc)
        try:
            policy._connect()  # fail fast (before any episode) when the server is unreachable or incompatible
        except RemotePolicyError as e:
            hint = "" if config.spawn else " — is `vla-bench serve` running there?"
            raise ConfigError(f"RemoteConfig.address={address!r}: {e}{hint}") from None
        return policy
