"""The lean training step (lth_lib.train.TrainStep) against plain autograd + torch.optim.Adam."""

import pytest
import torch
import torch.nn.functional as F
from helpers import initialized_network

from lth_lib.train import TrainStep


def _masks(network, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(w.shape, generator=g) > 0.3).float() for w in network.prunable().values()]


def _reference_steps(network, masks, x, y, idx, lr, steps):
    """The textbook loop: autograd, torch.optim.Adam(fused=True), masks multiplied in."""
    weights = list(network.prunable().values())
    with torch.no_grad():
        torch._foreach_mul_(weights, masks)
    opt = torch.optim.Adam(network.parameters(), lr=lr, fused=True)
    for i in range(steps):
        logits = network(x[idx[i]])
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx[i]].flatten(), reduction="sum") / idx.shape[-1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)


def test_manual_fc_step_matches_autograd_and_torch_adam(synthetic):
    k, steps = 3, 5
    idx = torch.randint(0, len(synthetic.train_x), (steps, k, 60), generator=torch.Generator().manual_seed(1))
    ref = initialized_network("lenet300", list(range(k)))
    masks = _masks(ref)
    ours = initialized_network("lenet300", list(range(k)))
    step = TrainStep(ours, masks, 1e-3)
    assert step.manual
    for i in range(steps):
        step(synthetic.train_x, synthetic.train_y, idx[i])
    _reference_steps(ref, masks, synthetic.train_x, synthetic.train_y, idx, 1e-3, steps)
    for a, b in zip(ours.parameters(), ref.parameters()):
        # Adam divides by sqrt(v): a gradient near zero (a pixel that is almost always
        # blank) can turn float rounding into a visible step in a few weights.
        close = torch.isclose(a, b, rtol=1e-4, atol=1e-5)
        assert close.float().mean() > 0.9999 and (a - b).abs().max() < 1e-3
    for w, m in zip(ours.prunable().values(), masks):
        assert torch.count_nonzero(w[m == 0]) == 0


def test_manual_gradients_match_autograd(synthetic):
    net = initialized_network("lenet300", [0, 1, 2])
    step = TrainStep(net, _masks(net), 1e-3)
    idx = torch.randint(0, len(synthetic.train_x), (3, 60), generator=torch.Generator().manual_seed(3))
    x, y = synthetic.train_x[idx], synthetic.train_y[idx]
    with torch.no_grad():
        step._fc_backward(x, y)
    manual = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = None
    (F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum") / 60).backward()
    for a, p in zip(manual, net.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_autograd_step_is_torch_adam_bit_for_bit(synthetic):
    k, steps = 2, 4
    idx = torch.randint(0, len(synthetic.train_x), (steps, k, 60), generator=torch.Generator().manual_seed(2))
    ref, ours = (initialized_network("lenet300", [5, 6]) for _ in range(2))
    masks = _masks(ref, 1)
    step = TrainStep(ours, masks, 1e-3, manual=False)
    for i in range(steps):
        step(synthetic.train_x, synthetic.train_y, idx[i])
    _reference_steps(ref, masks, synthetic.train_x, synthetic.train_y, idx, 1e-3, steps)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))


def test_conv_step_runs_and_keeps_masks():
    net = initialized_network("conv2", [0, 1])
    masks = _masks(net)
    step = TrainStep(net, masks, 2e-4)
    assert not step.manual
    x, y = torch.rand(100, 3, 32, 32), torch.randint(0, 10, (100,))
    before = [p.detach().clone() for p in net.parameters()]
    step(x, y, torch.randint(0, 100, (2, 8)))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    for w, m in zip(net.prunable().values(), masks):
        assert torch.count_nonzero(w[m == 0]) == 0


def test_adams_warmup_and_drops_are_torch_optims_lambda_lr(synthetic):
    """Adam with a schedule (a tensor learning rate on the device) against
    torch.optim.Adam(fused=True) with LambdaLR: step t at lr * min(1, (t + 1) / warmup) *
    0.1 ** (drops at or before t)."""
    from lth_lib.protocol import TrainingHparams

    steps, lr = 8, 1e-3
    hparams = TrainingHparams(iterations=steps + 1, lr=lr, warmup=3, lr_drops=(5,))
    idx = torch.randint(0, len(synthetic.train_x), (steps, 1, 60), generator=torch.Generator().manual_seed(2))
    ours, ref = initialized_network("lenet300", [0]), initialized_network("lenet300", [0])
    masks = _masks(ours)
    step = TrainStep(ours, masks, hparams)
    weights = list(ref.prunable().values())
    with torch.no_grad():
        torch._foreach_mul_(weights, masks)
    opt = torch.optim.Adam(ref.parameters(), lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 3) * 0.1 ** (t >= 5))
    for i in range(steps):
        step(synthetic.train_x, synthetic.train_y, idx[i])
        assert step.lr.item() == pytest.approx(schedule.get_last_lr()[0], rel=1e-6)
        loss = F.cross_entropy(
            ref(synthetic.train_x[idx[i]]).flatten(0, 1), synthetic.train_y[idx[i]].flatten()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)
    for a, b in zip(ours.parameters(), ref.parameters()):
        close = torch.isclose(a, b, rtol=1e-4, atol=1e-5)
        assert close.float().mean() > 0.9999 and (a - b).abs().max() < 1e-3
