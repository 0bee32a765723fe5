"""Latent action model (LatentVLA stage 0), trained on unlabelled frame sequences only.

    inverse dynamics:  enc(frame_t), enc(frame_t+k)  -> z (latent_dim)
    vector quantiser:  z -> nearest of `codes` codebook vectors (straight-through; codebook + commitment losses;
                       dead codes re-seeded from the batch)
    forward dynamics:  enc(frame_t) map + quantised z -> frame_t+k (downsampled), MSE

The training entry point takes frames and episode boundaries — nothing else — so it cannot read instructions,
actions or commentary (``unlabelled_frames`` extracts the images and touches no other field; a test proves it).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LAMConfig:
    image_size: int = 64
    recon_size: int = 32
    k: int = 4  # frame offset: the latent summarises what happens between t and t+k
    channels: int = 32
    latent_dim: int = 32
    codes: int = 16
    beta: float = 0.25  # commitment weight
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unlabelled_frames(episodes: Iterable[Any], camera: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames uint8 (N, H, W, 3), episode index (N,)) from each episode's ``images[camera]`` — no other field."""
    frames, owner = [], []
    for i, ep in enumerate(episodes):
        imgs = ep.images[camera]
        frames.append(torch.from_numpy(np.ascontiguousarray(imgs)))
        owner.append(torch.full((len(imgs),), i, dtype=torch.long))
    return torch.cat(frames), torch.cat(owner)


def pair_index(owner: torch.Tensor, k: int) -> torch.Tensor:
    """Positions t whose frame t+k belongs to the same episode."""
    n = len(owner)
    t = torch.arange(max(0, n - k))
    return t[owner[t] == owner[t + k]]


class Encoder(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 4, 2, 1), nn.SiLU(), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 4, 2, 1), nn.SiLU())  # 64 -> 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.enc = Encoder(c)
        feat = 2 * c * (cfg.image_size // 8) ** 2
        self.idm = nn.Sequential(nn.Linear(2 * feat, 256), nn.SiLU(), nn.Linear(256, cfg.latent_dim))
        self.codebook = nn.Parameter(torch.randn(cfg.codes, cfg.latent_dim) * 0.5)
        self.z_in = nn.Linear(cfg.latent_dim, 2 * c)
        up = cfg.recon_size // (cfg.image_size // 8)
        layers: list[nn.Module] = []
        ch = 4 * c
        while up > 1:
            layers += [nn.ConvTranspose2d(ch, c, 4, 2, 1), nn.SiLU()]
            ch, up = c, up // 2
        layers += [nn.Conv2d(ch, 3, 3, padding=1)]
        self.fdm = nn.Sequential(*layers)

    @staticmethod
    def prep(frames: torch.Tensor, size: int) -> torch.Tensor:
        x = frames.float().permute(0, 3, 1, 2) / 255.0
        return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x

    def encode_pair(self, f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.enc(self.prep(f0, self.cfg.image_size))
        h1 = self.enc(self.prep(f1, self.cfg.image_size))
        return h0, self.idm(torch.cat([h0.flatten(1), h1.flatten(1)], dim=1))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = torch.cdist(z, self.codebook)
        codes = d.argmin(dim=1)
        return codes, self.codebook[codes]

    @torch.no_grad()
    def codes_for(self, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return self.quantise(self.encode_pair(f0, f1)[1])[0]

    def forward(self, f0: torch.Tensor, f1: torch.Tensor) -> dict[str, torch.Tensor]:
        h0, z = self.encode_pair(f0, f1)
        codes, q = self.quantise(z)
        zq = z + (q - z).detach()  # straight-through
        zmap = self.z_in(zq)[:, :, None, None].expand(-1, -1, h0.shape[2], h0.shape[3])
        recon = self.fdm(torch.cat([h0, zmap], dim=1))
        target = self.prep(f1, self.cfg.recon_size)
        return {"recon": F.mse_loss(recon, target), "codebook": F.mse_loss(q, z.detach()),
                "commit": F.mse_loss(z, q.detach()), "codes": codes, "z": z}


def train_lam(frames: torch.Tensor, owner: torch.Tensor, cfg: LAMConfig, *, progress: bool = True,
              log: Callable[[str], None] = print) -> tuple[LatentActionModel, dict[str, Any]]:
    """Train on (frame_t, frame_t+k) pairs of the same episode. Returns the model and its report (curve,
    codebook usage over all pairs, dead codes, re-seeded codes)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model = LatentActionModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    pairs = pair_index(owner, cfg.k)
    if len(pairs) == 0:
        raise ValueError(f"no frame pairs {cfg.k} apart within an episode ({len(frames)} frames)")
    gen = torch.Generator().manual_seed(cfg.seed)
    usage = torch.zeros(cfg.codes)
    curve, reseeded, acc = [], 0, {}
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="latent action model", disable=not progress, file=sys.stderr, mininterval=5)
    for step in bar:
        sel = pairs[torch.randint(0, len(pairs), (cfg.batch,), generator=gen)]
        out = model(frames[sel], frames[sel + cfg.k])
        loss = out["recon"] + out["codebook"] + cfg.beta * out["commit"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage = 0.99 * usage + torch.bincount(out["codes"], minlength=cfg.codes).float()
        if step % 100 == 99:  # re-seed codes unused lately from random latents of this batch
            dead = torch.nonzero(usage < 0.5).flatten()
            if len(dead):
                with torch.no_grad():
                    pick = torch.randint(0, len(out["z"]), (len(dead),), generator=gen)
                    model.codebook[dead] = out["z"].detach()[pick]
                reseeded += len(dead)
        for k_, v in (("recon", out["recon"]), ("commit", out["commit"])):
            acc.setdefault(k_, []).append(float(v.detach()))
        if step % 50 == 49:
            curve.append({"step": step + 1, **{k_: round(float(np.mean(v)), 5) for k_, v in acc.items()}})
            bar.set_postfix(curve[-1])
            acc = {}
    model.eval()
    counts = torch.zeros(cfg.codes, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(pairs), 256):
            sel = pairs[i:i + 256]
            counts += torch.bincount(model.codes_for(frames[sel], frames[sel + cfg.k]), minlength=cfg.codes)
    p = counts.float() / counts.sum().clamp(min=1)
    perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    report = {"config": cfg.to_dict(), "pairs": int(len(pairs)), "curve": curve, "wall_s": round(time.time() - t0, 1),
              "code_usage": counts.tolist(), "dead_codes": [i for i, c in enumerate(counts.tolist()) if c == 0],
              "perplexity": perplexity, "reseeded_codes": reseeded}
    log(f"[latent_vla] LAM: recon {curve[-1]['recon'] if curve else float('nan')}, perplexity {perplexity:.2f} "
        f"of {cfg.codes} codes, dead {len(report['dead_codes'])}")
    return model, report
