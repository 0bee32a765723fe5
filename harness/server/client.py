"""Client side of the policy server: :class:`RemotePolicy`, a :class:`Policy` whose ``infer`` is a round trip.

A lost connection fails the call in progress with the reason (the runner fails that episode) and the next
``reset`` connects again. Latency is reported twice per call — the server's compute time and the round trip
seen here — in ``ActionChunk.extras`` and, averaged, in ``episode_stats()``.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np

from harness.interfaces import ActionChunk, Policy, Task
from harness.server.protocol import DEFAULT_MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ProtocolError, decode, encode


class RemotePolicyError(RuntimeError):
    """The server answered with an error, or the connection failed; the message says which and why."""


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); a bad value is named."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server address must be host:port (port 1-65535), got {address!r}")
    return host, int(port)


class RemotePolicy(Policy):
    def __init__(self, address: str, *, timeout_s: float = 120.0, connect_timeout_s: float = 10.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, token: str | None = None,
                 server_process: subprocess.Popen | None = None):
        self.host, self.port = parse_address(address)
        self.address = address
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_message_bytes, self.token = max_message_bytes, token
        self.server_process = server_process  # a server this policy started (method remote, spawn: true)
        self.ws: Any = None
        self.server_info: dict[str, Any] = {}
        self.connects = 0
        self._rtt: list[float] = []
        self._compute: list[float] = []
        self._batch: list[int] = []

    # ----- connection -----
    def _connect(self) -> None:
        from websockets.sync.client import connect

        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        uri = f"ws://{host}:{self.port}"
        try:
            self.ws = connect(uri, max_size=self.max_message_bytes, compression=None, proxy=None,
                              open_timeout=self.connect_timeout_s, user_agent_header=None)
            self.ws.__enter__()  # websockets >= 17.1 wants the context-manager form; we close() ourselves
        except Exception as e:  # noqa: BLE001 — refused, timed out, DNS ...
            self.ws = None
            raise RemotePolicyError(f"cannot connect to policy server {self.address}: {type(e).__name__}: {e}") from None
        try:
            self.ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "client": "vla-bench"}
        if self.token is not None:
            hello["token"] = self.token
        reply = self._call(hello, "hello", timeout=self.connect_timeout_s)
        self.server_info = {k: v for k, v in reply.items() if k != "type"}
        self.actions_per_call = float(reply.get("actions_per_call", 1.0))
        self.connects += 1

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass
            self.ws = None

    def _call(self, msg: dict[str, Any], expect: str, timeout: float | None = None) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        if self.ws is None:
            raise RemotePolicyError(f"not connected to policy server {self.address}")
        try:
            data = encode(msg)
            if len(data) > self.max_message_bytes:
                raise RemotePolicyError(f"{msg['type']!r} message of {len(data)} bytes exceeds the limit of "
                                        f"{self.max_message_bytes} bytes (max_message_mb)")
            self.ws.send(data)
            raw = self.ws.recv(timeout=self.timeout_s if timeout is None else timeout)
            reply = decode(raw, self.max_message_bytes)
        except (ConnectionClosed, OSError, TimeoutError, ProtocolError) as e:
            self.close()
            what = ("timed out" if isinstance(e, TimeoutError) else f"sent a malformed reply ({e})"
                    if isinstance(e, ProtocolError) else f"lost ({type(e).__name__}: {e})")
            raise RemotePolicyError(f"connection to policy server {self.address} {what} during {msg['type']!r}; "
                                    "the next episode reconnects") from None
        if reply.get("type") == "error":
            if reply.get("code") in ("version", "auth"):
                self.close()
            raise RemotePolicyError(f"policy server {self.address} error ({reply.get('code')}): {reply.get('message')}")
        if reply.get("type") != expect:
            self.close()
            raise RemotePolicyError(f"policy server {self.address} answered {reply.get('type')!r} to {msg['type']!r}")
        return reply

    # ----- Policy -----
    def reset(self, task: Task, seed: int) -> None:
        self._rtt, self._compute, self._batch = [], [], []
        if self.ws is None:
            self._connect()
        self._call({"type": "reset", "task": {"name": task.name, "instruction": task.instruction,
                                              "index": int(task.index)}, "seed": int(seed)}, "reset")

    def infer(self, obs: dict[str, Any]) -> ActionChunk:
        wire = {"images": {k: np.asarray(v) for k, v in obs["images"].items()},
                "proprio": np.asarray(obs["proprio"]), "instruction": obs["instruction"]}
        t0 = time.perf_counter()
        reply = self._call({"type": "infer", "obs": wire}, "action")
        rtt_ms = (time.perf_counter() - t0) * 1000.0
        actions = reply.get("actions")
        if not isinstance(actions, np.ndarray):
            raise RemotePolicyError(f"policy server {self.address} sent actions of type {type(actions).__name__}")
        self._rtt.append(rtt_ms)
        self._compute.append(float(reply.get("compute_ms", 0.0)))
        self._batch.append(int(reply.get("batch_size", 1)))
        extras = dict(reply.get("extras") or {})
        extras.update(remote_rtt_ms=rtt_ms, remote_compute_ms=self._compute[-1], remote_batch=self._batch[-1])
        return ActionChunk(actions, n_execute=reply.get("n_execute"), extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        if self.ws is not None:
            try:
                stats.update(self._call({"type": "stats"}, "stats").get("stats") or {})
            except RemotePolicyError as e:
                stats["remote_stats_error"] = str(e)
        if self._rtt:
            stats.update(remote_rtt_ms_mean=float(np.mean(self._rtt)),
                         remote_compute_ms_mean=float(np.mean(self._compute)),
                         remote_overhead_ms_mean=float(np.mean(np.subtract(self._rtt, self._compute))),
                         remote_batch_mean=float(np.mean(self._batch)))
        stats["remote_connects"] = self.connects
        for key in ("method", "suite", "config_digest"):  # what was served (the results folder says `remote`)
            if key in self.server_info:
                stats[f"server_{key}"] = self.server_info[key]
        return stats

    def __del__(self) -> None:
        self.close()
        if self.server_process is not None and self.server_process.poll() is None:
            self.server_process.terminate()


def spawn_server(method: str, suite: str, *, python: str = "", debug: bool = False, max_batch: int = 1,
                 batch_window_ms: float = 2.0, overrides: dict[str, Any] | None = None, device: str = "cpu",
                 cwd: str | None = None, startup_timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start ``vla-bench serve`` in a child process (``python``: another venv's interpreter) on a free loopback
    port; returns (process, "127.0.0.1:PORT"). The child exits when this process's end of its stdin closes."""
    import json
    import tempfile
    import threading

    cmd = [python or sys.executable, "-m", "harness.server", "--method", method, "--suite", suite, "--port", "0",
           "--max-batch", str(max_batch), "--batch-window-ms", str(batch_window_ms), "--device", device,
           "--watch-stdin"]
    if debug:
        cmd.append("--debug")
    for k, v in (overrides or {}).items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    errlog = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True, cwd=cwd)
    box: dict[str, str] = {}

    def read_first_line() -> None:
        box["line"] = proc.stdout.readline() if proc.stdout else ""

    t = threading.Thread(target=read_first_line, daemon=True)
    t.start()
    t.join(startup_timeout_s)
    line = box.get("line", "")
    marker = "listening on ws://"
    if marker not in line:
        proc.kill()
        proc.wait()
        errlog.seek(0)
        err = errlog.read()[-2000:]
        raise RemotePolicyError(f"policy server did not start ({' '.join(cmd)}): {line.strip()} {err.strip()}")
    address = line.split(marker, 1)[1].split()[0]
    return proc, address
