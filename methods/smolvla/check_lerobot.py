"""Cross-check methods/smolvla against LeRobot's own ``VLAFlowMatching`` / ``SmolVLMWithExpertModel`` source on a tiny
random model (LeRobot's two modelling files are loaded from an unpacked wheel with its unrelated imports stubbed, since
``lerobot`` itself does not import beside this project's torch):

    pip download --no-deps lerobot==0.4.4 -d /tmp/lr && cd /tmp/lr && unzip -q lerobot-0.4.4-py3-none-any.whl
    .venv/bin/python -m methods.smolvla.check_lerobot /tmp/lr/lerobot/policies/smolvla

Measured 2026-11-23 (CPU, float32): max |ours - LeRobot| = 2.4e-07 on actions of magnitude 2.2 (10 Euler steps).
"""

import importlib.util
import sys
import tempfile
import types
from types import SimpleNamespace as NS

import torch

torch.set_num_threads(1)
LR = (sys.argv[1] if len(sys.argv) > 1 else "/tmp/lr/lerobot/policies/smolvla").rstrip("/") + "/"
OUT = tempfile.mkdtemp(prefix="smolvla-xcheck-")


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


for pkg in ("lerobot", "lerobot.policies", "lerobot.policies.smolvla", "lerobot.policies.rtc", "lerobot.utils"):
    stub(pkg).__path__ = []
stub("lerobot.policies.pretrained", PreTrainedPolicy=torch.nn.Module)
stub("lerobot.policies.rtc.modeling_rtc", RTCProcessor=object)
stub("lerobot.policies.smolvla.configuration_smolvla", SmolVLAConfig=object)
stub("lerobot.policies.utils", populate_queues=None)
stub(
    "lerobot.utils.constants", ACTION="action", OBS_LANGUAGE_ATTENTION_MASK="m", OBS_LANGUAGE_TOKENS="t", OBS_STATE="s"
)
stub("lerobot.utils.utils", get_safe_dtype=lambda dt, dev: dt if dev != "mps" else torch.float32)
import transformers

transformers.AutoProcessor.from_pretrained = staticmethod(
    lambda *a, **k: NS(tokenizer=NS(fake_image_token_id=0, global_image_token_id=1))
)


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


load("lerobot.policies.smolvla.smolvlm_with_expert", LR + "smolvlm_with_expert.py")
ms = load("lerobot.policies.smolvla.modeling_smolvla", LR + "modeling_smolvla.py")

from methods.smolvla.model import build_tiny, resize_with_pad

ours = build_tiny(cameras=["top"], image_hw=(32, 32), state_dim=2, action_dim=2, texts=["reach the red target"], seed=0)
ours.save_pretrained(OUT)
c = ours.cfg
cfg = NS(
    vlm_model_name=OUT + "/vlm",
    freeze_vision_encoder=True,
    train_expert_only=True,
    load_vlm_weights=False,
    attention_mode=c["attention_mode"],
    num_expert_layers=c["num_expert_layers"],
    num_vlm_layers=c["num_vlm_layers"],
    self_attn_every_n_layers=c["self_attn_every_n_layers"],
    expert_width_multiplier=c["expert_width_multiplier"],
    device="cpu",
    max_state_dim=c["max_state_dim"],
    max_action_dim=c["max_action_dim"],
    train_state_proj=True,
    add_image_special_tokens=False,
    prefix_length=-1,
    compile_model=False,
    rtc_config=None,
    chunk_size=c["chunk_size"],
    min_period=c["min_period"],
    max_period=c["max_period"],
    num_steps=c["num_steps"],
    use_cache=True,
)
ref = ms.VLAFlowMatching(cfg).eval()
missing, unexpected = ref.load_state_dict({k[len("model.") :]: v for k, v in ours.state_dict().items()}, strict=False)
print("lerobot module vs ours: missing", missing, "unexpected", unexpected)
g = torch.Generator().manual_seed(0)
img = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8, generator=g)
text = ours.encode_instruction("reach the red target")
state = torch.randn(1, 2, generator=g)
noise = ours.noise(g)
with torch.no_grad():
    st = ours.forward_prefix(ours.embed_prefix({"top": img}, text, state))
    a_ours = ours.sample_actions(st, noise.clone())
    pix = resize_with_pad(img.permute(0, 3, 1, 2).float() / 255, 32, 32, pad_value=0) * 2 - 1
    s = torch.nn.functional.pad((state - ours.state_mean) / (ours.state_std + 1e-8), (0, c["max_state_dim"] - 2))
    x = ref.sample_actions(
        [pix], [torch.ones(1, dtype=torch.bool)], text, torch.ones_like(text, dtype=torch.bool), s, noise=noise.clone()
    )
    a_ref = x[:, :, :2] * ours.action_std + ours.action_mean
print("max |ours - lerobot| =", float((a_ours - a_ref).abs().max()), " max |a| =", float(a_ref.abs().max()))
