"""Seeds: one integer per trial determines init, validation split and data order.

Each use draws from its own generator, derived from (seed, purpose) by a stable hash, so
adding a new use of randomness never shifts the numbers of an existing one.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for `purpose`, the same in every process and on every machine."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded for `purpose` (e.g. "init", "split", "order")."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


_M32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix of int64 `x` (values below 2**32 in and out; no product
    overflows): random bits computed on the device from seeds and counters, reproducibly
    on any device and inside a CUDA graph (dropout masks, augmentation)."""
    x = x & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x
