"""The reference teacher: heads, language head, checkpoints (sha256, no pickle), distill, a resumable training run."""
import json

import numpy as np
import pytest
import torch

from harness.interfaces import DataSource, Task
from harness.plugins import make_method, make_suite
from methods.reference import checkpoint as ckpt
from methods.reference.adapter import MissingCheckpointError, ReferencePolicy
from methods.reference.config import ReferenceConfig
from methods.reference.model import EOS, ModelConfig, ReferenceVLA, WordTokenizer

TINY = dict(cameras=["top"], image_size=32, stem_channels=[8], grid=4, width=32, expert_width=32, heads=2,
            depth=3, chunk=4, flow_steps=2, proprio_dim=2, action_dim=2, vocab_size=12, max_text_len=8)


def _batch(b=3):
    g = torch.Generator().manual_seed(0)
    return ({"top": torch.randint(0, 255, (b, 32, 32, 3), dtype=torch.uint8, generator=g)},
            torch.tensor([[4, 5, 6, 0]] * b), torch.randn(b, 2, generator=g), torch.randn(b, 4, 2, generator=g))


@pytest.mark.parametrize("head", ["flow", "regression", "discrete"])
def test_heads_train_step_and_sample(head):
    torch.manual_seed(0)
    m = ReferenceVLA(ModelConfig(**{**TINY, "head": head}))
    images, text, proprio, actions = _batch()
    mask = text != 0
    state = m.forward_prefix(m.embed_prefix(images, text, proprio, mask))
    loss = m.action_loss(state, actions)
    loss.backward()
    assert torch.isfinite(loss) and m.blocks[0].qkv.weight.grad is not None
    with torch.no_grad():
        a = m.sample_actions(m.forward_prefix(m.embed_prefix(images, text, proprio, mask)))
    assert a.shape == (3, 4, 2) and torch.isfinite(a).all()


def test_padding_does_not_change_the_output():
    torch.manual_seed(0)
    m = ReferenceVLA(ModelConfig(**TINY)).eval()
    images, _, proprio, noise = _batch(1)
    with torch.no_grad():
        short = m.sample_actions(m.forward_prefix(m.embed_prefix(images, torch.tensor([[4, 5]]), proprio)), noise)
        padded = torch.tensor([[4, 5, 0, 0]])
        long = m.sample_actions(m.forward_prefix(m.embed_prefix(images, padded, proprio, padded != 0)), noise)
    torch.testing.assert_close(short, long, rtol=1e-4, atol=1e-5)


def test_language_head_trains_and_generates():
    torch.manual_seed(0)
    tok = WordTokenizer.train(["slow down, a car is ahead.", "turn left at the junction."])
    m = ReferenceVLA(ModelConfig(**{**TINY, "lang_head": True, "lang_vocab_size": len(tok), "lang_max_len": 6}))
    images, text, proprio, _ = _batch(2)
    target = torch.tensor([[2] + tok.encode("turn left at the junction.", 6, eos=True)] * 2)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(60):
        st = m.forward_prefix(m.embed_prefix(images, text, proprio))
        logits = m.lang_logits(st, target[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = m.generate_text(m.forward_prefix(m.embed_prefix(images, text, proprio)), 8)
    assert tok.decode(out[0]) == "turn left at the junction."
    assert out[0][-1] == EOS


def test_tokenizer_round_trip():
    tok = WordTokenizer.train(["put the bowl in the basket", "Pick up the KETCHUP"])
    assert tok.decode(tok.encode("pick up the bowl", 10)) == "pick up the bowl"
    assert tok.encode("pick up a zebra", 10)[-1] == 1  # unknown word


def _export(tmp_path, fp16=True):
    torch.manual_seed(0)
    m = ReferenceVLA(ModelConfig(**TINY)).eval()
    tok = WordTokenizer.train(["reach the red target"])
    ckpt.export(m, tok, None, tmp_path, extra={"suite": "mock-v1", "seed": 0}, fp16=fp16)
    return m, tok


def test_checkpoint_round_trip_verifies_sha256(tmp_path):
    m, tok = _export(tmp_path, fp16=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["model.safetensors"] == ckpt.sha256_file(tmp_path / "model.safetensors")
    assert {"config", "tokenizer", "code", "seed", "suite"} <= set(manifest)
    m2, tok2, _, _ = ckpt.load(tmp_path)
    images, text, proprio, noise = _batch(1)
    with torch.no_grad():
        a1 = m.sample_actions(m.forward_prefix(m.embed_prefix(images, text[:, :3], proprio)), noise)
        a2 = m2.sample_actions(m2.forward_prefix(m2.embed_prefix(images, text[:, :3], proprio)), noise)
    assert torch.equal(a1, a2) and tok2.vocab == tok.vocab
    raw = bytearray((tmp_path / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ckpt.ChecksumError, match="sha256"):
        ckpt.load(tmp_path)


def test_checkpoint_is_fp16_safetensors(tmp_path):
    from safetensors import safe_open

    _export(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("blocks.0.qkv.weight").dtype == torch.float16
    m2, *_ = ckpt.load(tmp_path)
    assert m2.blocks[0].qkv.weight.dtype == torch.float32


def test_distill_without_checkpoint_names_make_teacher(tmp_path):
    method = make_method("reference")
    suite = make_suite("mock-v1")
    cfg = method.config("mock-v1", overrides={"checkpoint": str(tmp_path / "absent")})
    with pytest.raises(MissingCheckpointError, match="make teacher SUITE=mock-v1"):
        method.distill(None, DataSource(suite, tmp_path), cfg)


def test_policy_is_deterministic_per_seed(tmp_path):
    _export(tmp_path)
    model, tok, _, manifest = ckpt.load(tmp_path)
    pol = ReferencePolicy(model, tok, None, manifest, ReferenceConfig(n_execute=2))
    obs = {"images": {"top": np.zeros((32, 32, 3), np.uint8)}, "proprio": np.zeros(2, np.float32),
           "instruction": "reach the red target"}
    task = Task("red", "reach the red target")
    pol.reset(task, 7)
    a = pol.infer(obs)
    pol.reset(task, 7)
    b = pol.infer(obs)
    assert a.n_execute == 2 and a.actions.shape == (4, 2)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_training_runs_and_resumes(tmp_path):
    from methods.reference import train

    tiny_model = json.dumps({k: v for k, v in TINY.items()
                             if k not in ("cameras", "proprio_dim", "action_dim", "vocab_size")})
    common = ["--suite", "mock-v1", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "ckpt"),
              "--threads", "1", "--set", f"model={tiny_model}", "--set", "demos_per_task=4", "--set", "batch=8",
              "--set", "save_every=2", "--set", "eval_every=2", "--set", "warmup=1"]
    import methods.reference.train as T

    T.ROOT = tmp_path  # demos cache under tmp
    assert train.main(common + ["--steps", "4", "--minutes", "0"]) == 0  # budget 0: stops after the first step
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    assert meta["step"] == 1
    assert train.main(common + ["--steps", "4"]) == 0
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    assert meta["step"] == 4
    manifest = ckpt.read_manifest(tmp_path / "ckpt")
    assert manifest["train"]["complete"] and manifest["data"]["hash"]
    curve = json.loads((tmp_path / "ckpt" / "curve.json").read_text())
    assert [v["step"] for v in curve["val"]] == [2, 4]
    ckpt.load(tmp_path / "ckpt")
    # warm start: a new run (own state dir) copies the finished run's weights, and the manifest says so
    warm = [a if a != str(tmp_path / "state") else str(tmp_path / "state2") for a in common]
    warm = [a if a != str(tmp_path / "ckpt") else str(tmp_path / "ckpt2") for a in warm]
    assert train.main(warm + ["--steps", "2", "--init", str(tmp_path / "ckpt")]) == 0
    init = ckpt.read_manifest(tmp_path / "ckpt2")["train"]["init_from"]
    assert init["step"] == 4 and init["tensors_copied"] > 10 and init["kept_fresh"] == []
    assert ckpt.read_manifest(tmp_path / "ckpt2")["tokenizer"] == manifest["tokenizer"]  # the source's vocabulary
    with pytest.raises(SystemExit, match="neither a training state"):
        train.main(warm + ["--fresh", "--steps", "2", "--init", str(tmp_path / "nowhere")])


def test_dagger_policy_drives_and_expert_labels(tmp_path):
    """DAgger episodes: the learned policy's actions are executed, every frame's label is the expert's action."""
    from harness.interfaces import DataSource
    from methods.reference.data import collect_dagger_episodes, train_seed

    suite = make_suite("mock-v1")
    method = make_method("reference")
    policy = method.distill(None, DataSource(suite, tmp_path), method.config("mock-v1"))
    tasks = suite.tasks()[:2]
    eps, stats = collect_dagger_episodes(suite, policy, 2, start=500, tasks=tasks, progress=False, min_frames=1)
    assert stats["episodes"] == 4 and stats["expert_chunks"] == 0 and stats["chunks"] > 0
    assert len(eps) == 4 and {e.task for e in eps} == {t.name for t in tasks}
    eval_seeds = {e.seed for p in ("full", "quick", "smoke") for e in suite.episodes(p)}
    assert not {train_seed("mock-v1", t.name, i) for t in tasks for i in (500, 501)} & eval_seeds
    # relabel the first episode's first frame with a fresh expert: the stored label is the expert's action
    env = suite.make_env(tasks[0], privileged=True)
    seed = train_seed("mock-v1", tasks[0].name, 500)
    from harness.interfaces import EpisodeSpec

    obs, _ = env.reset(seed=seed, options={"episode": EpisodeSpec("x/0", tasks[0], 0, seed, suite.max_steps(tasks[0]))})
    expert = suite.expert()
    expert.reset(tasks[0], seed)
    np.testing.assert_allclose(eps[0].actions[0], expert.infer(obs).actions[0], rtol=1e-6, atol=1e-6)
    env.close()


def test_keypoint_tokens_follow_a_bright_spot_and_extend_the_vision_span():
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY, "keypoints": 8, "kp_per_token": 4})
    m = ReferenceVLA(cfg).eval()
    images, text, proprio, _ = _batch(1)
    state = m.embed_prefix(images, text, proprio)
    s, e = state.spans.vision["top"]
    assert e - s == cfg.grid ** 2 + 2 and m.patch_grid == cfg.grid
    # make keypoint 0 a brightness detector: its expected x moves right with a white dot on a black image
    stem = m.stem
    with torch.no_grad():
        stem.net[0].weight.zero_(); stem.net[0].bias.zero_(); stem.net[0].weight[:, :, 1, 1] = 1.0
        stem.kp_conv.weight.zero_(); stem.kp_conv.bias.zero_(); stem.kp_conv.weight[0] = 1.0
        stem.kp_log_temp.fill_(3.0)
        xs = []
        for col in (4, 16, 28):
            img = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
            img[0, 14:18, col - 2:col + 2] = 255
            f = stem.net[:-1](img.float().div(127.5).sub(1).permute(0, 3, 1, 2))
            att = (stem.kp_conv(f).flatten(2) * stem.kp_log_temp.exp()).softmax(-1).view(1, 8, *f.shape[-2:])
            xs.append(float((att[0, 0].sum(0) * torch.linspace(-1, 1, f.shape[-1])).sum()))
    assert xs[0] < -0.4 and abs(xs[1]) < 0.2 and xs[2] > 0.4, xs


def test_warm_start_from_a_grid_only_model_keeps_every_shared_tensor(tmp_path):
    from methods.reference.train import _warm_start

    torch.manual_seed(0)
    src = ReferenceVLA(ModelConfig(**{**TINY, "head": "regression"}))
    tok = WordTokenizer.train(["pick the red block"])
    ckpt.export(src, tok, None, tmp_path / "src", extra={"suite": "x"})
    dst = ReferenceVLA(ModelConfig(**{**TINY, "head": "regression", "keypoints": 8, "kp_per_token": 4}))
    info = _warm_start(dst, tmp_path / "src", lambda s: None)
    assert sorted(info["kept_fresh"]) == sorted(["kp_pos", "stem.kp_conv.weight", "stem.kp_conv.bias",
                                                 "stem.kp_log_temp", "stem.kp_proj.weight", "stem.kp_proj.bias"])
    torch.testing.assert_close(dst.blocks[2].qkv.weight, src.blocks[2].qkv.weight.half().float())


def test_teacher_episodes_finds_the_teachers_parts_and_warns_otherwise(tmp_path):
    from methods.reference.data import Episode, data_hash, save_episodes
    from methods.reference.train import teacher_episodes

    def eps(seed, n=2):
        r = np.random.default_rng(seed)
        return [Episode({"top": r.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)},
                        r.normal(size=(3, 2)).astype(np.float32), r.normal(size=(3, 2)).astype(np.float32),
                        "reach the red target") for _ in range(n)]

    a, b = eps(0), eps(1)
    save_episodes(a, tmp_path / "demos_part0.npz")
    save_episodes(b, tmp_path / "demos_part1.npz")  # e.g. a DAgger round made after the teacher was trained
    suite = make_suite("mock-v1")
    logs = []
    got, src, _ = teacher_episodes(suite, {"data": {"hash": data_hash(a)}}, logs.append, cache=tmp_path)
    assert data_hash(got) == data_hash(a) and "demos_part1" not in src
    got, src, _ = teacher_episodes(suite, {"data": {"hash": data_hash(a + b)}}, logs.append, cache=tmp_path)
    assert len(got) == 4
    got, src, _ = teacher_episodes(suite, {"data": {"hash": "0000"}}, logs.append, cache=tmp_path)
    assert "NOT the teacher's data" in src and any("WARNING" in m and "0000" in m for m in logs)


def test_warm_start_keeps_the_source_vocabulary():
    """Session 6: DAgger data without the word 'onto' rebuilt a 118-word commentary vocabulary against the
    checkpoint's 119, and the warm start silently re-initialised the language head. The source's vocabulary is kept;
    new words map to <unk> and are named in the log."""
    from methods.reference.train import _vocab

    kept = WordTokenizer.train(["merge onto the highway", "keep lane"]).vocab
    logs: list[str] = []
    tok = _vocab(kept, ["keep lane", "exit the roundabout"], "commentary", logs.append)
    assert tok.vocab == kept  # same ids and size although 'onto' and 'merge' are absent from the new texts
    assert tok.encode("exit", 4) == [tok.index["<unk>"]]
    assert logs and "['exit', 'roundabout']" in logs[0]
    assert _vocab(None, ["b a"], "instruction", logs.append).vocab[-2:] == ["a", "b"]


def test_warm_start_extends_the_vocabulary_and_copies_the_old_rows(tmp_path):
    """A warm start onto data with new words (a group LIBERO teacher from the libero_object one) appends them: the
    kept words keep their ids, their embedding rows are copied, the new rows start fresh."""
    from methods.reference.train import _vocab, _warm_start

    kept = WordTokenizer.train(["pick the red block"])
    tok = _vocab(kept.vocab, ["pick the red block", "open the top drawer"], "instruction", lambda s: None,
                 extend=True)
    assert tok.vocab[: len(kept.vocab)] == kept.vocab and tok.vocab[len(kept.vocab):] == ["drawer", "open", "top"]
    assert tok.encode("pick the top", 4)[:2] == kept.encode("pick the", 4)
    torch.manual_seed(0)
    src = ReferenceVLA(ModelConfig(**{**TINY, "head": "regression", "vocab_size": len(kept)}))
    ckpt.export(src, kept, None, tmp_path / "src", extra={"suite": "x"})
    dst = ReferenceVLA(ModelConfig(**{**TINY, "head": "regression", "vocab_size": len(tok), "max_text_len": 10}))
    fresh = dst.tok_embed.weight.detach().clone()
    info = _warm_start(dst, tmp_path / "src", lambda s: None)
    assert sorted(info["rows_copied_into_grown"]) == ["tok_embed.weight", "txt_pos"] and not info["kept_fresh"]
    n = len(kept)
    torch.testing.assert_close(dst.tok_embed.weight[:n], src.tok_embed.weight.half().float())
    torch.testing.assert_close(dst.tok_embed.weight[n:], fresh[n:])  # the appended words' rows: fresh init
    torch.testing.assert_close(dst.txt_pos[:TINY["max_text_len"]], src.txt_pos.half().float())


def test_cli_without_teacher_checkpoint_exits_2_naming_make_teacher(tmp_path, capsys):
    """A method whose teacher has not been trained for the suite gets a one-line error, not a traceback."""
    from harness.cli import main

    rc = main(["bench", "--method", "teacher", "--suite", "mock-v1", "--set", f"checkpoint={tmp_path / 'absent'}",
               "--results", str(tmp_path / "r"), "--limit", "1", "--no-profile", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "make teacher SUITE=mock-v1" in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("episodes.jsonl"))


def test_export_is_byte_deterministic(tmp_path):
    """The same weights give the same file (and manifest sha256) on every export: safetensors writes the metadata map
    in hash order, so a second metadata key made the bytes differ between exports."""
    digests = set()
    for i in range(6):
        _export(tmp_path / str(i))
        digests.add(ckpt.sha256_file(tmp_path / str(i) / "model.safetensors"))
    assert len(digests) == 1, digests


def test_soup_averages_members_and_records_them(tmp_path):
    from methods.reference.soup import soup

    _export(tmp_path / "a")
    torch.manual_seed(1)
    m = ReferenceVLA(ModelConfig(**TINY)).eval()
    ckpt.export(m, WordTokenizer.train(["reach the red target"]), None, tmp_path / "b", extra={"suite": "mock-v1"})
    (tmp_path / "b" / "curve.json").write_text('{"train": [[1, 0.5]]}')
    man = soup([tmp_path / "a", tmp_path / "b"], tmp_path / "s", [0.25, 0.75])
    a, *_ = ckpt.load(tmp_path / "a")
    b, *_ = ckpt.load(tmp_path / "b")
    s, *_ = ckpt.load(tmp_path / "s")
    w = "blocks.0.qkv.weight"
    want = (0.25 * a.state_dict()[w] + 0.75 * b.state_dict()[w]).half().float()
    assert torch.equal(s.state_dict()[w], want)
    assert man["soup"]["weights"] == [0.25, 0.75] and len(man["soup"]["members_sha256"]) == 2
    assert "curve.json" in man["files"]
    assert json.loads((tmp_path / "s" / "curve.json").read_text())["members"][1]["curve"] == {"train": [[1, 0.5]]}
    with pytest.raises(ValueError, match="sum to 1"):
        soup([tmp_path / "a", tmp_path / "b"], tmp_path / "t", [0.5, 0.6])
