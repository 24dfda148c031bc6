"""One network of an experiment as a plain PyTorch module, masks attached, to use or retrain elsewhere.

    ticket = export_ticket(results, level=3, trial=0)   # plain module, pruned weights held at zero
    plain = export_ticket(results, level=3, finalize=True).state_dict()   # loads into plain_network(...)

The module is `plain_network(network)`: an `nn.Sequential` for the paper's Section 2-3
networks, the network's own module for a `CustomNetwork` (Section 4's, a user's), its
buffers (batch normalisation's statistics) included.

What the results store keeps decides what can be exported: every member's mask and its
weights at the rewind point can be rebuilt (theta_0 from the seeds, theta_k and the masks
from the store, the controls' inits and random masks from their seeds, as
`lottery.level_members` builds them); trained weights are kept for each trial's dense
network (level 0) and, for small networks (`lottery.KEEP_TRAINED_BELOW`), its trained
ticket at every level.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.nn.utils import prune

from lth_lib.lottery import NOT_KEPT_TICKETS, Label, level_members
from lth_lib.models import State, plain_network, weight_names
from lth_lib.protocol import CustomNetwork, architecture
from lth_lib.pruning import Mask
from lth_lib.results import Results

WEIGHTS = ("rewind", "trained")


def export_ticket(
    results: Results,
    level: int,
    trial: int = 0,
    kind: str = "ticket",
    control: int = 0,
    weights: str = "rewind",
    finalize: bool = False,
) -> nn.Module:
    """One network of `results` as `plain_network`, its mask attached to each weight with
    `prune.custom_from_mask` (training keeps pruned weights at zero; its state dict holds
    `weight_orig` and `weight_mask`, and loads into another masked export; the module
    pickles whole, for a process that can import lth_lib).

    kind: "ticket", or a control the experiment trained ("reinit", "random_prune"; index
    `control` of its `control_trials`). weights: "rewind", the weights its retraining
    starts from at the rewind iteration k (theta_0 or the store's theta_k; a reinit
    control's fresh init), at any level; or "trained", the trained ticket (level 0: the
    dense network), which the results store keeps at pruned levels for networks of at most
    `lottery.KEEP_TRAINED_BELOW` parameters. finalize: remove the masks (`prune.remove`), leaving plain weights
    and a state dict that loads into `plain_network`. Raises ValueError naming the valid
    values for a wrong request, and `NotKeptError` saying why for what the store does not
    keep."""
    state, mask = _member(results, level, trial, kind, control, weights)
    name = results.experiment.network
    network, keys = plain_network(name), weight_names(name)
    if isinstance(architecture(name), CustomNetwork):  # the module's own names
        network.load_state_dict(state)
        layers = {layer: network.get_submodule(layer) for layer in keys}
    else:
        plain = [m for m in network if isinstance(m, (nn.Conv2d, nn.Linear))]
        layers = dict(zip(keys, plain))
        with torch.no_grad():
            for layer, module in layers.items():
                module.weight.copy_(state[keys[layer]])
                module.bias.copy_(state[keys[layer].replace(".weight", ".bias")])
    with torch.no_grad():  # the masked weight that pruning caches on a layer stays a graph leaf
        for layer_name, layer in layers.items():
            layer.weight.mul_(mask[layer_name])
            prune.custom_from_mask(layer, "weight", mask[layer_name])
            if finalize:
                prune.remove(layer, "weight")
            else:
                layer.register_forward_hook(_release_masked_weight)
    return network


def _release_masked_weight(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """After a forward pass, detach the masked weight the pruning hook cached on `layer`:
    holding the autograd graph, it would make `copy.deepcopy` fail (pytorch/pytorch#37322)."""
    if prune.is_pruned(layer):
        layer.weight = layer.weight.detach()


def _member(
    results: Results, level: int, trial: int, kind: str, control: int, weights: str
) -> tuple[State, Mask]:
    """The state (Network member names) and mask to export, after checking that they are
    asked for rightly (what the store does not keep raises `results.NotKeptError`)."""
    exp = results.experiment
    _check("weights", weights, WEIGHTS)
    _check("level", level, sorted(results.masks))
    _check("trial", trial, range(exp.trials))
    _check(f"kind at level {level}", kind, ("ticket", *exp.controls) if level else ("ticket",))
    _check(f"control index of a {kind}", control, range(exp.control_trials) if kind != "ticket" else (0,))
    if weights == "trained":
        if kind != "ticket":
            raise ValueError(
                "the results store keeps trained weights only of the tickets (the dense network at level 0); "
                "controls keep their masks and records: use weights='rewind' to export this network to retrain"
            )
        tickets = (
            results.dense_weights if level == 0 else results.trained_tickets.get(level, NOT_KEPT_TICKETS)
        )
        return tickets[trial], results.masks[level][trial]
    members = dict(
        level_members(exp, level, [results.masks[level][trial]], [results.rewind_weights[trial]], [trial])
    )
    member = members[Label(kind, trial, level, control)]
    return member.weights, member.mask


def _check(name: str, value: object, allowed: Collection) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
