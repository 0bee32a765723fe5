"""A tiny patch-token transformer used by the mock policy and by the FLOPs exactness tests.

It supports the two run-time reductions the compression methods rely on — skipping blocks and pruning
tokens after a block — so FLOP counts of both can be checked against :func:`analytic_flops`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, image_size: int = 32, patch: int = 4, dim: int = 32, depth: int = 2, heads: int = 2,
                 mlp_ratio: int = 4, out_dim: int = 2):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.n_tokens = (image_size // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.head = nn.Linear(dim, out_dim)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float (B, H, W, 3) -> (B, N, dim) patch tokens."""
        x = images.float().div(255.0).permute(0, 3, 1, 2)
        p = self.patch
        x = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, 3*p*p)
        return self.embed(x) + self.pos

    def forward(self, images: torch.Tensor, skip: frozenset[int] = frozenset(), keep_after: int | None = None,
                keep: int | None = None) -> torch.Tensor:
        x = self.tokens(images)
        for i, blk in enumerate(self.blocks):
            if i in skip:
                continue  # the block is not computed at all
            x = blk(x)
            if keep_after == i and keep is not None:
                x = x[:, :keep]  # prune tokens after block i
        return self.head(x.mean(dim=1))


def analytic_flops(image_size: int, patch: int, dim: int, depth: int, heads: int, mlp_ratio: int = 4,
                   out_dim: int = 2, skip: frozenset[int] = frozenset(), keep_after: int | None = None,
                   keep: int | None = None) -> int:
    """Hand count (2 x MACs) of TinyTransformer.forward for batch 1: linears and attention matmuls."""
    n = (image_size // patch) ** 2
    total = 2 * n * (3 * patch * patch) * dim  # patch embedding
    for i in range(depth):
        if i in skip:
            continue
        total += 2 * n * dim * 3 * dim  # qkv
        total += 2 * n * n * dim * 2  # QK^T and AV over all heads
        total += 2 * n * dim * dim  # output projection
        total += 2 * n * dim * mlp_ratio * dim * 2  # MLP
        if keep_after == i and keep is not None:
            n = keep
    total += 2 * dim * out_dim  # head
    return total
