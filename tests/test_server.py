"""Policy server and method `remote`: identical actions across processes, malformed and oversize messages,
dropped connections, policy errors, batching. Skipped without the server extra."""
import threading
from pathlib import Path

import numpy as np
import pytest

msgpack = pytest.importorskip("msgpack")
pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.runner import build_policy, run, run_episode
from harness.server.client import RemotePolicy, RemotePolicyError, spawn_server
from harness.server.protocol import PROTOCOL_VERSION, ProtocolError, decode, encode
from harness.server.server import PolicyServer
from harness.specs import RunSpec

ROOT = Path(__file__).resolve().parent.parent


def _built(method="mock"):
    return build_policy(RunSpec(method=method, suite="mock-v1"))


@pytest.fixture
def server(request):
    kw = getattr(request, "param", {})
    srv = PolicyServer(_built(kw.pop("method", "mock")).policy, port=0, info={"method": "mock"}, **kw)
    host, port = srv.start()
    srv.address = f"{host}:{port}"
    yield srv
    srv.shutdown()


def _raw(address, **kw):
    return connect(f"ws://{address}", compression=None, proxy=None, **kw)


def _hello(ws, version=PROTOCOL_VERSION):
    ws.send(encode({"type": "hello", "protocol": version}))
    return decode(ws.recv(timeout=10))


def _episode_pairs(local, remote, ep, suite, barrier=None):
    """Drive one episode with the local policy's actions; at every observation ask both policies."""
    env = suite.make_env(ep.task)
    obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
    local.reset(ep.task, ep.seed)
    remote.reset(ep.task, ep.seed)
    if barrier is not None:  # every client connected before the first infer
        barrier.wait(timeout=60)
    pairs, steps, done = [], 0, False
    while not done and steps < ep.max_steps:
        a, r = local.infer(obs), remote.infer(obs)
        pairs.append((a, r))
        for act in a.executed():
            obs, _, term, trunc, info = env.step(act)
            steps += 1
            done = term or trunc or info["success"] or steps >= ep.max_steps
            if done:
                break
    return pairs


@pytest.mark.parametrize("method", ["mock", "reference"])
def test_round_trip_across_processes_gives_identical_actions(method):
    """The mock policy and the reference VLA (committed mock-v1 checkpoint, flow head) served by a child process."""
    proc, address = spawn_server(method, "mock-v1", cwd=str(ROOT))
    try:
        built = _built(method)
        remote = RemotePolicy(address)
        for ep in built.suite.episodes("smoke")[:2]:
            pairs = _episode_pairs(built.policy, remote, ep, built.suite)
            assert len(pairs) >= 2
            for a, r in pairs:
                assert r.actions.dtype == a.actions.dtype
                if method == "mock":
                    assert np.array_equal(a.actions, r.actions)
                else:  # same weights and seeded flow noise: equal up to float summation order across processes
                    np.testing.assert_allclose(r.actions, a.actions, rtol=0, atol=1e-5)
                assert r.n_execute == a.n_execute and r.extras["tokens_kept"] == a.extras["tokens_kept"]
                assert 0 < r.extras["remote_compute_ms"] <= r.extras["remote_rtt_ms"]
        assert remote.server_info["method"] == method and remote.server_info["protocol"] == PROTOCOL_VERSION
        stats = remote.episode_stats()
        assert stats["infer_calls"] == len(pairs)  # the served policy's own statistics come back
        assert stats["remote_rtt_ms_mean"] >= stats["remote_compute_ms_mean"] > 0
        remote.close()
    finally:
        proc.stdin.close()  # the server exits when its stdin closes
        assert proc.wait(timeout=30) == 0


def test_bench_remote_matches_in_process(tmp_path, server):
    local = run(RunSpec(method="mock", suite="mock-v1", profile="smoke", results=str(tmp_path / "a"),
                        skip_profile=True), progress=False, log=lambda s: None).read_episodes()
    rd = run(RunSpec(method="remote", suite="mock-v1", profile="smoke", results=str(tmp_path / "b"),
                     skip_profile=True, overrides=(("address", server.address),)), progress=False, log=lambda s: None)
    remote = rd.read_episodes()
    key = lambda e: (e["episode_id"], e["success"], e["steps"], e["error"], e["metrics"]["final_distance"])
    assert sorted(map(key, remote)) == sorted(map(key, local))
    assert all(e["method_stats"]["server_method"] == "mock" and e["method_stats"]["remote_rtt_ms_mean"] > 0
               for e in remote)


def test_malformed_messages_get_an_error_reply_and_the_server_goes_on(server):
    with _raw(server.address) as ws:
        bad = [b"\xc1\xc1 not msgpack", msgpack.packb([1, 2, 3]), msgpack.packb({"no": "type"}),
               encode({"type": "infer", "obs": {}}),  # before hello
               encode({"type": "launch_missiles"})]
        for frame in bad:
            ws.send(frame)
            reply = decode(ws.recv(timeout=10))
            assert reply["type"] == "error" and reply["code"] in ("malformed", "state"), reply
        ws.send("a text frame")
        assert decode(ws.recv(timeout=10))["code"] == "malformed"
        assert _hello(ws)["type"] == "hello"  # the same connection still works
        arrays = [
            {"__nd__": 1, "dtype": "|O", "shape": [1], "data": b"\x00" * 8},  # object dtype: refused
            {"__nd__": 1, "dtype": "<f4", "shape": [4], "data": b"\x00" * 3},  # wrong byte count
            {"__nd__": 1, "dtype": "<f4", "shape": [-1], "data": b""},
        ]
        for arr in arrays:
            msg = {"type": "infer", "obs": {"images": {"top": arr}, "proprio": arr, "instruction": "x"}}
            ws.send(msgpack.packb(msg, use_bin_type=True))
            reply = decode(ws.recv(timeout=10))
            assert reply["type"] == "error" and reply["code"] == "malformed", reply
            assert "dtype" in reply["message"] or "bytes" in reply["message"] or "shape" in reply["message"]
        ws.send(encode({"type": "reset", "task": {"name": "red"}, "seed": 1}))
        reply = decode(ws.recv(timeout=10))
        assert reply["code"] == "malformed" and "instruction" in reply["message"]
    with _raw(server.address) as ws:  # a wrong protocol version is refused and the connection closed
        reply = _hello(ws, version=99)
        assert reply["code"] == "version" and "99" in reply["message"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    built = _built()
    pairs = _episode_pairs(built.policy, RemotePolicy(server.address), built.suite.episodes("smoke")[0], built.suite)
    assert all(np.array_equal(a.actions, r.actions) for a, r in pairs)


def test_decode_never_unpickles_or_accepts_other_dtypes():
    with pytest.raises(ProtocolError, match="not allowed"):
        decode(msgpack.packb({"type": "x", "a": {"__nd__": 1, "dtype": "<U4", "shape": [1], "data": b"a\0\0\0" * 4}}))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(b"\x80" * 100, max_bytes=10)
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    b = decode(encode({"type": "x", "a": a}))["a"]
    assert b.dtype == a.dtype and np.array_equal(a, b) and b.flags.writeable


@pytest.mark.parametrize("server", [{"max_message_bytes": 64 * 1024}], indirect=True)
def test_oversize_message_is_rejected(server):
    with _raw(server.address, max_size=None) as ws:
        assert _hello(ws)["type"] == "hello"
        ws.send(b"\x00" * (100 * 1024))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # "message too big"
    remote = RemotePolicy(server.address, max_message_bytes=64 * 1024)  # the client refuses to send one, too
    built = _built()
    ep = built.suite.episodes("smoke")[0]
    remote.reset(ep.task, ep.seed)
    obs = {"images": {"top": np.zeros((256, 256, 3), np.uint8)}, "proprio": np.zeros(2, np.float32),
           "instruction": ep.task.instruction}
    with pytest.raises(RemotePolicyError, match="exceeds the limit"):
        remote.infer(obs)
    # the server still serves normal-sized requests on a new connection
    pairs = _episode_pairs(built.policy, RemotePolicy(server.address, max_message_bytes=64 * 1024), ep, built.suite)
    assert all(np.array_equal(a.actions, r.actions) for a, r in pairs)


def test_dropped_connection_fails_the_episode_and_the_next_one_reconnects(server):
    built = _built()
    remote = RemotePolicy(server.address)
    ep1, ep2 = built.suite.episodes("smoke")[:2]
    env = built.suite.make_env(ep1.task)
    calls = {"n": 0}

    def drop_on_third_call(obs):
        calls["n"] += 1
        if calls["n"] == 3:
            server.drop_connections()

    failed, env_ok = run_episode(env, remote, ep1, privileged=False, timeout_s=60, on_obs=drop_on_third_call)
    assert failed.success is False and env_ok
    assert "policy.infer" in failed.error and "connection to policy server" in failed.error, failed.error
    assert failed.infer_calls == 2
    ok, _ = run_episode(built.suite.make_env(ep2.task), remote, ep2, privileged=False, timeout_s=60)
    assert ok.error is None and ok.steps > 0
    assert remote.connects == 2 and ok.method_stats["remote_connects"] == 2


@pytest.mark.parametrize("server", [{"method": "mock@raise"}], indirect=True)
def test_policy_exception_is_an_error_reply_naming_it(server):
    built = _built()
    remote = RemotePolicy(server.address)
    ep = built.suite.episodes("smoke")[0]
    result, _ = run_episode(built.suite.make_env(ep.task), remote, ep, privileged=False, timeout_s=60)
    assert "injected policy failure" in result.error and "(policy)" in result.error, result.error
    remote.reset(ep.task, ep.seed)  # the same connection goes on
    assert remote.connects == 1


@pytest.mark.parametrize("server", [{"max_batch": 4, "batch_window_ms": 200.0}], indirect=True)
def test_batching_groups_parallel_sessions_into_one_call(server):
    built = _built()
    eps = built.suite.episodes("smoke")[:2]
    out: dict[int, list] = {}
    barrier = threading.Barrier(2)
    # built here, one after the other: MockPolicy seeds torch's global RNG, which threads would share
    locals_ = [build_policy(RunSpec(method="mock", suite="mock-v1")).policy for _ in range(2)]

    def client(i):
        out[i] = _episode_pairs(locals_[i], RemotePolicy(server.address), eps[i], built.suite, barrier)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(server.batch_sizes) == 2, server.batch_sizes  # both sessions' infers in one policy call
    assert any(r.extras["remote_batch"] == 2 for pairs in out.values() for _, r in pairs)
    for pairs in out.values():  # a batched forward pass may differ from batch-1 in the last float bits only
        for a, r in pairs:
            np.testing.assert_allclose(r.actions, a.actions, atol=1e-4)


def test_serve_cli_usage_errors_exit_2(capsys):
    from harness.cli import main

    base = ["serve", "--method", "mock", "--suite", "mock-v1"]
    for args, named in ((["--port", "70000"], "70000"), (["--max-batch", "0"], "0"), (["--method", "nosuch"], "nosuch"),
                        (["--max-message-mb", "-1"], "-1")):
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert "error" in err and named in err, err


@pytest.mark.parametrize("server", [{"token": "s3cret"}], indirect=True)
def test_token_is_required_when_the_server_has_one(server):
    with pytest.raises(RemotePolicyError, match=r"\(auth\)"):
        RemotePolicy(server.address)._connect()
    with pytest.raises(RemotePolicyError, match=r"\(auth\)"):
        RemotePolicy(server.address, token="wrong")._connect()
    ok = RemotePolicy(server.address, token="s3cret")
    ok._connect()
    assert ok.server_info["session"] >= 1
