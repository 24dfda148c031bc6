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
