"""Helpers the unit tests import (conftest.py is not importable by name: notebooks/ has one too)."""

from __future__ import annotations

import os

import pytest

from lth_lib.models import Network, glorot_init


def unavailable(reason: str) -> None:
    """Skip for `reason`; fail instead under CI=true, so CI cannot pass without the test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: not skipped)")
    pytest.skip(reason)


def initialized_network(name: str, seeds: list[int] | int = 0) -> Network:
    """Network `name` with one member per seed, Glorot-initialised from it."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    network = Network(name, members=len(seeds))
    network.load_members([glorot_init(name, seed) for seed in seeds])
    return network
