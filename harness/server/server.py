"""The policy server: one built policy behind a WebSocket, one session (a copy of the policy sharing its
weights) per client connection, all policy calls on one worker thread that can batch ``infer`` requests
from several sessions into one call.

    vla-bench serve --method M --suite S [--port 8765] [--host 127.0.0.1] [--max-batch 4 --batch-window-ms 2]
    python -m harness.server ...   (the same)

Batching: the worker takes the first waiting ``infer`` and, when ``max_batch > 1``, waits at most
``batch_window_ms`` for infers of other sessions (never longer than it takes for every connected session to
have one waiting). A policy class that defines ``infer_batch(policies, obs_list) -> list[ActionChunk]`` gets
the batch in one call; any other policy is called once per observation, in arrival order. With
``max_batch == 1`` the connection's own thread makes the call (under the same lock), which saves two thread
hand-offs per round trip.
"""
from __future__ import annotations

import copy
import hmac
import itertools
import logging
import queue
import socket
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from harness.interfaces import ActionChunk, Policy, Task
from harness.server.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    check_request,
    decode,
    encode,
    error,
)

log = logging.getLogger("vla_bench.server")
SERVER_NAME = "vla-bench-policy-server"


def fork_policy(policy: Policy) -> Policy:
    """A per-session copy of ``policy`` that shares its torch modules (weights) and copies everything else
    (RNG, caches, episode state). A policy may define ``session_copy()`` to do this itself."""
    custom = getattr(policy, "session_copy", None)
    if callable(custom):
        return custom()
    memo: dict[int, Any] = {}
    for m in policy.modules():
        for sub in m.modules():
            memo[id(sub)] = sub
        for t in itertools.chain(m.parameters(), m.buffers()):
            memo[id(t)] = t
    return copy.deepcopy(policy, memo)


@dataclass
class Session:
    sid: int
    policy: Policy
    peer: str
    calls: int = 0
    compute_ms: float = 0.0


@dataclass
class Job:
    kind: str  # reset | infer | stats
    session: Session
    payload: Any
    future: Future = field(default_factory=Future)
    t_arrive: float = field(default_factory=time.perf_counter)


class PolicyServer:
    def __init__(self, policy: Policy, *, host: str = "127.0.0.1", port: int = 8765, max_batch: int = 1,
                 batch_window_ms: float = 2.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 token: str | None = None, info: dict[str, Any] | None = None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        if batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {batch_window_ms!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port!r}")
        self.policy, self.host, self.port = policy, host, port
        self.max_batch, self.window_s = max_batch, batch_window_ms / 1000.0
        self.max_message_bytes, self.token = max_message_bytes, token
        self.info = dict(info or {})
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._sessions: dict[int, Session] = {}
        self._conns: set[Any] = set()
        self._lock = threading.Lock()  # sessions and connections
        self._policy_lock = threading.Lock()  # one policy call at a time, whichever thread makes it
        self._ids = itertools.count(1)
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.batch_sizes: list[int] = []  # every infer batch the worker ran (benchmarks read this)

    # ----- lifecycle -----
    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; returns the bound (host, port) (port 0 picks a free one)."""
        from websockets.sync.server import serve

        self._server = serve(self._handle, self.host, self.port, max_size=self.max_message_bytes,
                             compression=None, server_header=None, logger=log)
        self.port = self._server.socket.getsockname()[1]
        for target in (self._server.serve_forever, self._worker):
            t = threading.Thread(target=target, daemon=True, name=f"policy-server-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self.host, self.port

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self._jobs.put(None)

    def drop_connections(self) -> None:
        """Close every client connection abruptly (tests: a dropped network link)."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def n_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ----- one connection -----
    def _send(self, conn: Any, msg: dict[str, Any]) -> None:
        conn.send(encode(msg))

    def _handle(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        peer = f"{conn.remote_address[0]}:{conn.remote_address[1]}" if conn.remote_address else "?"
        session: Session | None = None
        with self._lock:
            self._conns.add(conn)
        try:
            while True:
                try:
                    raw = conn.recv()
                except ConnectionClosed as e:
                    if e.rcvd is not None and e.rcvd.code == 1009 or e.sent is not None and e.sent.code == 1009:
                        log.warning("%s: message over %d bytes refused; connection closed", peer,
                                    self.max_message_bytes)
                    return
                try:
                    msg = decode(raw, self.max_message_bytes)
                    check_request(msg)
                except ProtocolError as e:
                    self._send(conn, error("malformed", str(e)))
                    continue
                kind = msg["type"]
                if kind == "hello":
                    reply, session = self._hello(msg, peer, session)
                    self._send(conn, reply)
                    if reply["type"] == "error":
                        conn.close(1008, reply["code"])
                        return
                    continue
                if kind == "bye":
                    conn.close()
                    return
                if session is None:
                    self._send(conn, error("state", f"send 'hello' before {kind!r}"))
                    continue
                job = Job(kind, session, msg)
                if self.max_batch == 1:  # no batching: run here, saving two thread hand-offs per call
                    with self._policy_lock:
                        self._run_jobs(job, [])
                else:
                    self._jobs.put(job)
                reply = job.future.result()
                try:
                    data = encode(reply)
                except (TypeError, ValueError, OverflowError) as e:  # e.g. extras that msgpack cannot carry
                    data = encode(error("policy", f"{kind}: reply cannot be encoded: {e}"))
                conn.send(data)
        except ConnectionClosed:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
                if session is not None:
                    self._sessions.pop(session.sid, None)

    def _hello(self, msg: dict, peer: str, session: Session | None) -> tuple[dict, Session | None]:
        if msg["protocol"] != PROTOCOL_VERSION:
            return error("version", f"server speaks protocol {PROTOCOL_VERSION}, client sent {msg['protocol']!r}"), session
        if self.token is not None and not hmac.compare_digest(str(msg.get("token", "")), self.token):
            return error("auth", "missing or wrong token"), session
        if session is None:
            try:
                policy = fork_policy(self.policy)
            except Exception as e:  # noqa: BLE001
                return error("policy", f"cannot create a session: {type(e).__name__}: {e}"), None
            session = Session(next(self._ids), policy, peer)
            with self._lock:
                self._sessions[session.sid] = session
        return {"type": "hello", "protocol": PROTOCOL_VERSION, "server": SERVER_NAME, "session": session.sid,
                "max_message_bytes": self.max_message_bytes, "max_batch": self.max_batch,
                "actions_per_call": float(getattr(self.policy, "actions_per_call", 1.0)), **self.info}, session

    # ----- the worker: every policy call happens here -----
    def _worker(self) -> None:
        backlog: list[Job | None] = []
        while True:
            job = backlog.pop(0) if backlog else self._jobs.get()
            if job is None:
                return
            with self._policy_lock:
                self._run_jobs(job, backlog)

    def _run_jobs(self, job: Job, backlog: list[Job | None]) -> None:
        batch = [job]
        try:
            if job.kind != "infer":
                job.future.set_result(self._run_other(job))
                return
            self._collect(batch, backlog)
            self._run_infer(batch)
        except Exception as e:
            log.exception("policy server worker")
            for j in batch:
                if not j.future.done():
                    j.future.set_result(error("policy", f"server error: {type(e).__name__}: {e}"))

    def _collect(self, batch: list[Job], backlog: list[Job | None]) -> None:
        """Add other sessions' waiting infers to ``batch`` until it is full, every connected session has one
        in it, or the window since the first one's arrival has passed."""
        if self.max_batch == 1:
            return
        deadline = batch[0].t_arrive + self.window_s
        while len(batch) < min(self.max_batch, self.n_sessions):
            remaining = deadline - time.perf_counter()
            try:
                nxt = self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                return
            if nxt is not None and nxt.kind == "infer":
                batch.append(nxt)
            else:
                backlog.append(nxt)  # after this batch (its session has nothing else outstanding)
                if nxt is None:
                    return

    def _run_other(self, job: Job) -> dict[str, Any]:
        s, msg = job.session, job.payload
        try:
            if job.kind == "reset":
                t = msg["task"]
                s.policy.reset(Task(t["name"], t["instruction"], t["index"]), msg["seed"])
                s.calls, s.compute_ms = 0, 0.0
                return {"type": "reset"}
            from harness.runner import _jsonable

            return {"type": "stats", "stats": _jsonable(s.policy.episode_stats()),
                    "server_compute_ms_mean": s.compute_ms / s.calls if s.calls else None}
        except Exception as e:  # noqa: BLE001 — a failing policy answers with an error; the server goes on
            return error("policy", f"{job.kind}: {type(e).__name__}: {e}")

    def _run_infer(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        policies = [j.session.policy for j in batch]
        obs = [j.payload["obs"] for j in batch]
        batched = len(batch) > 1 and callable(getattr(type(policies[0]), "infer_batch", None))
        results: list[Any] = []
        if batched:
            try:
                results = list(type(policies[0]).infer_batch(policies, obs))
                if len(results) != len(batch):
                    raise ValueError(f"infer_batch returned {len(results)} chunks for {len(batch)} observations")
            except Exception as e:  # noqa: BLE001
                results = [e] * len(batch)
        else:
            for p, o in zip(policies, obs):
                try:
                    results.append(p.infer(o))
                except Exception as e:  # noqa: BLE001
                    results.append(e)
        compute_ms = (time.perf_counter() - t0) * 1000.0
        self.batch_sizes.append(len(batch))
        for j, r in zip(batch, results):
            j.session.calls += 1
            j.session.compute_ms += compute_ms
            j.future.set_result(self._action_reply(r, compute_ms, len(batch), (t0 - j.t_arrive) * 1000.0))

    @staticmethod
    def _action_reply(r: Any, compute_ms: float, batch: int, queue_ms: float) -> dict[str, Any]:
        if isinstance(r, Exception):
            return error("policy", f"infer: {type(r).__name__}: {r}")
        if not isinstance(r, ActionChunk):
            return error("policy", f"infer returned {type(r).__name__}, expected ActionChunk")
        import numpy as np

        from harness.runner import _jsonable

        return {"type": "action", "actions": np.asarray(r.actions), "n_execute": r.n_execute,
                "extras": _jsonable(r.extras), "compute_ms": compute_ms, "batch_size": batch, "queue_ms": queue_ms}


def serve_policy(spec: Any, *, host: str, port: int, max_batch: int, batch_window_ms: float,
                 max_message_bytes: int, token: str | None, watch_stdin: bool = False,
                 announce: Any = None) -> None:
    """Build ``spec``'s policy and serve it until interrupted (or stdin closes, with ``watch_stdin``)."""
    from harness.runner import build_policy, set_threads

    set_threads(spec.threads)
    built = build_policy(spec)
    info = {"method": built.method.method_id, "suite": built.suite.suite_id, "config_digest": built.config.digest(),
            "device": spec.device}
    server = PolicyServer(built.policy, host=host, port=port, max_batch=max_batch, batch_window_ms=batch_window_ms,
                          max_message_bytes=max_message_bytes, token=token, info=info)
    h, p = server.start()
    (announce or print)(f"vla-bench serve: {info['method']} ({info['suite']}) listening on ws://{h}:{p} "
                        f"protocol {PROTOCOL_VERSION} max_batch {max_batch}")
    sys.stdout.flush()
    try:
        if watch_stdin:  # the parent holds our stdin: when it dies (even kill -9), we go too
            while sys.stdin.buffer.read(4096):
                pass
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
