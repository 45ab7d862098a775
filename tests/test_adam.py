"""``training/adam.py`` against ``torch.optim.Adam``, the independent reference: the same
parameters after every step (fused kernel and the tensor-by-tensor formula, with weight
decay and a learning rate that changes between steps), and state dicts that move between
the two in both directions, so ``train_state.pt`` files of either kind resume."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from training.adam import Adam


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 12, generator=g)  # (B, 12)
    y = torch.randn(8, 5, generator=g)  # (B, 5)
    return ((model(x) - y) ** 2).mean()


def _run(model: nn.Module, optimizer, steps: range) -> None:
    for step in steps:
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 * (1 + step % 3)  # a schedule: lr changes between steps
        optimizer.zero_grad(set_to_none=True)
        _loss(model, step).backward()
        optimizer.step()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_every_step_matches_torch_adam(fused, weight_decay):
    ours_model, ref_model = _model(), _model()
    ours = Adam(ours_model.parameters(), lr=1e-2, weight_decay=weight_decay)
    if not fused:
        ours.param_groups[0]["fused"] = False
    assert ours.param_groups[0]["fused"] is fused
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2, weight_decay=weight_decay,
                           foreach=False)
    for step in range(25):
        _run(ours_model, ours, range(step, step + 1))
        _run(ref_model, ref, range(step, step + 1))
        for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.state_dict()["state"].values(), ref.state_dict()["state"].values(),
                    strict=True):
        assert float(a["step"]) == float(b["step"]) == 25
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("direction", ["torch -> ours", "ours -> torch"])
def test_state_dicts_interchange_with_torch_adam(direction):
    """Ten steps with one optimizer, its state saved, ten more with the other one loaded
    from it: the same parameters as twenty steps of torch.optim.Adam alone."""
    whole_model = _model()
    whole = torch.optim.Adam(whole_model.parameters(), lr=1e-2)
    _run(whole_model, whole, range(20))

    first_model = _model()
    first_cls, second_cls = ((torch.optim.Adam, Adam) if direction == "torch -> ours"
                             else (Adam, torch.optim.Adam))
    first = first_cls(first_model.parameters(), lr=1e-2)
    _run(first_model, first, range(10))
    saved = first.state_dict()
    second_model = _model(seed=1)  # other weights and no state: the load must bring both
    second_model.load_state_dict(first_model.state_dict())
    second = second_cls(second_model.parameters(), lr=1e-2)
    second.load_state_dict(saved)
    _run(second_model, second, range(10, 20))
    for a, b in zip(second_model.parameters(), whole_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_state_of_another_shape_is_refused():
    optimizer = Adam(_model().parameters())
    other = torch.optim.Adam([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="single parameter group"):
        optimizer.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="no parameters"):
        Adam([])
    with pytest.raises(ValueError, match="invalid Adam settings"):
        Adam(_model().parameters(), lr=-1.0)


def test_training_never_imports_torch_dynamo():
    """The reason this optimizer exists: a short training run in a fresh interpreter
    leaves ``torch._dynamo`` unimported (it costs seconds to import)."""
    import subprocess

    code = ("import sys, torch; from torch import nn; from training.adam import Adam\n"
            "m = nn.Linear(4, 2); o = Adam(m.parameters())\n"
            "for _ in range(3):\n"
            "    o.zero_grad(); m(torch.ones(3, 4)).sum().backward(); o.step()\n"
            "o.load_state_dict(o.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"
