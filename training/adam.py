"""Adam, the trainer's optimizer: torch.optim.Adam's update and state, without torch.optim.

The update is Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization",
Algorithm 1, with L2 weight decay added to the gradient, exactly as ``torch.optim.Adam``
(``amsgrad=False``, ``maximize=False``) computes it:

    g = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * g             # exp_avg
    v = beta2 * v + (1 - beta2) * g * g         # exp_avg_sq
    param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Why not ``torch.optim.Adam`` itself: its first use imports ``torch._dynamo`` (about 2 s
on a small CPU, paid by every training process: the CLI, each of the app's jobs, each
demo run) although nothing here compiles. This class calls the same fused kernel that
``torch.optim.Adam(fused=True)`` calls (``torch._fused_adam_``: one call updates every
parameter) where the device and torch provide it, and the formula above, tensor by
tensor, elsewhere.

Its ``state_dict()`` has ``torch.optim.Adam``'s layout (per parameter ``step``,
``exp_avg``, ``exp_avg_sq``; one parameter group), so ``train_state.pt`` files written by
either resume with the other. ``tests/test_adam.py`` checks every step against
``torch.optim.Adam``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class Adam:
    """Adam over one parameter group. ``param_groups[0]["lr"]`` may change between steps
    (the trainer's schedule sets it before every step)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters")
        if not (lr >= 0 and eps >= 0 and weight_decay >= 0
                and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        # The group's keys are torch.optim.Adam's, so its state dicts and ours interchange.
        self.param_groups: list[dict[str, Any]] = [{
            "params": self.params, "lr": lr, "betas": tuple(betas), "eps": eps,
            "weight_decay": weight_decay, "amsgrad": False, "maximize": False,
            "foreach": None, "capturable": False, "differentiable": False,
            "fused": self._fused_possible(), "decoupled_weight_decay": False}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _fused_possible(self) -> bool:
        return (hasattr(torch, "_fused_adam_")
                and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32
                        and p.device == self.params[0].device for p in self.params))

    def _state_of(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(param)
        if state is None:
            # torch keeps a fused optimizer's step on the parameter's device, else on the CPU
            step_device = param.device if self.param_groups[0]["fused"] else torch.device("cpu")
            state = {"step": torch.zeros((), dtype=torch.float32, device=step_device),
                     "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                     "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
            self.state[param] = state
        return state

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params if p.grad is not None]
        states = [self._state_of(p) for p in params]
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = float(group["lr"]), group["eps"], group["weight_decay"]
        steps = [s["step"] for s in states]
        if group["fused"]:
            try:
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, grads,
                                   [s["exp_avg"] for s in states],
                                   [s["exp_avg_sq"] for s in states], [], steps,
                                   lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                                   eps=eps, amsgrad=False, maximize=False)
                return
            except (RuntimeError, TypeError, NotImplementedError):  # no kernel for this case
                torch._foreach_sub_(steps, 1)
                group["fused"] = False
                for s in states:  # unfused steps live on the CPU, as in torch
                    s["step"] = s["step"].cpu()
        for p, grad, s in zip(params, grads, states, strict=True):
            s["step"] += 1
            t = float(s["step"])
            if weight_decay:
                grad = grad.add(p, alpha=weight_decay)
            s["exp_avg"].lerp_(grad, 1 - beta1)
            s["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (s["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
            p.addcdiv_(s["exp_avg"], denom, value=-lr / (1 - beta1 ** t))

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s layout: parameters numbered 0, 1, ... in order. The
        tensors are the optimizer's own (as torch's are): save or copy them, do not
        change them."""
        index = {id(p): i for i, p in enumerate(self.params)}
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": list(range(len(self.params)))} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state of this layout (ours or ``torch.optim.Adam``'s, already checked by
        ``training/validate.py`` when it comes from a file): copies its tensors onto each
        parameter's device; takes lr, betas, eps and weight_decay from its group."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or list(groups[0]["params"]) != list(range(len(self.params))):
            raise ValueError("the state is not of this optimizer's single parameter group")
        fused = self.param_groups[0]["fused"]
        for key in ("lr", "betas", "eps", "weight_decay"):
            if key in groups[0]:
                self.param_groups[0][key] = (tuple(groups[0][key]) if key == "betas"
                                             else groups[0][key])
        self.state = {}
        for i, entry in state_dict["state"].items():
            p = self.params[int(i)]
            step_device = p.device if fused else torch.device("cpu")
            self.state[p] = {
                "step": entry["step"].detach().to(step_device, torch.float32).clone(),
                "exp_avg": entry["exp_avg"].detach().to(p.device, p.dtype).clone(),
                "exp_avg_sq": entry["exp_avg_sq"].detach().to(p.device, p.dtype).clone()}
