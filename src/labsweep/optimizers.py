"""The course's optimizers, built from their typed config (``labsweep.schema.SGDConfig`` / ``AdamConfig``).

Both run torch's fused kernel (one kernel for all parameters; on the CPU a step of the Lab 1 MLP's parameters
took 20 instead of 37 us with momentum, 37 instead of 106 us with Adam, against torch's per-tensor loop), through
torch.optim's functional API: ``torch.optim.sgd.sgd`` and ``torch.optim.adam.adam``, the functions that
``torch.optim.SGD(fused=True).step()`` and ``Adam(fused=True).step()`` call, with the same arguments, so the
same bits. What ``FusedOptimizer`` adds is the state those classes keep, in their layout (``param_groups``,
``state``, ``state_dict()``). Not the classes themselves, because (``python scripts/bench_optimizer.py``):

- constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (its ``add_param_group`` is wrapped in
  ``torch._disable_dynamo``): a fresh process's first optimizer took 1.12 s that way, 0.15 s this way;
- their ``step()`` wrapper (profiler hooks, grad mode, the step-hook machinery) cost more than the kernel call at
  these sizes: 19.8 against 11.9 us a step of the Lab 1 MLP with SGD, and its epoch in labsweep's loop was
  1.07-1.10x faster this way (``python scripts/bench_step_overhead.py --only optimizer``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from labsweep.schema import AdamConfig, OptimizerConfig, SGDConfig

Params = Iterable[torch.nn.Parameter]


class FusedOptimizer:
    """One group of parameters and their optimizer state, as ``torch.optim.Optimizer`` keeps them: ``step()``
    updates every parameter that has a gradient; ``state_dict()`` / ``load_state_dict()`` use torch.optim's
    layout (state by parameter index, the group's settings with its parameters' indices)."""

    def __init__(self, params: Params, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("an optimizer needs at least one parameter")
        self.param_groups: list[dict[str, Any]] = [{**self.defaults, "params": params}]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Every parameter's gradient set to None (``torch.optim``'s default, ``set_to_none=True``)."""
        for p in self._params():
            p.grad = None

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._params())}
        groups, first = [], 0
        for group in self.param_groups:
            groups.append({k: v for k, v in group.items() if k != "params"}
                          | {"params": list(range(first, first + len(group["params"])))})  # fmt: skip
            first += len(group["params"])
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """A ``state_dict()``'s state, its tensors copied onto each parameter's device (moments in its dtype)."""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimizer state does not fit these parameters")
        params = self._params()
        state: dict[torch.Tensor, dict[str, Any]] = {}
        for i, saved in state_dict["state"].items():
            p = params[int(i)]
            state[p] = {k: self._to_param(p, k, v) for k, v in saved.items()}
        self.state = state
        for group, saved_group in zip(self.param_groups, groups, strict=True):
            group.update({k: v for k, v in saved_group.items() if k != "params"})

    @staticmethod
    def _to_param(p: torch.Tensor, key: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if key == "step":  # the fused kernels keep the step count as a float32 scalar on the parameter's device
            return value.to(device=p.device, dtype=torch.float32).clone()
        return value.to(device=p.device, dtype=p.dtype).clone()


class SGD(FusedOptimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay=..., fused=True)``: the momentum buffer starts as the
    first gradient; no dampening, no Nesterov."""

    def __init__(self, params: Params, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": weight_decay,
                                  "nesterov": False, "maximize": False, "fused": True})  # fmt: skip

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            momentum = group["momentum"]
            buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params] if momentum else []
            sgd(params, [p.grad for p in params], buffers, fused=True, weight_decay=group["weight_decay"],
                momentum=momentum, lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                maximize=group["maximize"])  # fmt: skip
            for p, buffer in zip(params, buffers):  # the first step creates them
                self.state.setdefault(p, {})["momentum_buffer"] = buffer


class Adam(FusedOptimizer):
    """``torch.optim.Adam(params, lr, weight_decay=..., fused=True)``: betas (0.9, 0.999), eps 1e-8, L2 weight
    decay added to the gradient (not AdamW's)."""

    def __init__(self, params: Params, *, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay,
                                  "amsgrad": False, "maximize": False, "fused": True})  # fmt: skip

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p not in self.state:
                    self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                     "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}  # fmt: skip
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                 [], [s["step"] for s in states], fused=True, amsgrad=False, beta1=beta1, beta2=beta2,
                 lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])  # fmt: skip


# The one place an optimizer name is dispatched.
OPTIMIZERS: dict[str, Callable[[OptimizerConfig, Params], FusedOptimizer]] = {
    "sgd": lambda c, p: SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda c, p: Adam(p, lr=c.lr, weight_decay=c.weight_decay),
}


def build_optimizer(config: OptimizerConfig, params: Params) -> FusedOptimizer:
    """``sgd`` (plain or with momentum: Labs 1 and 2) or ``adam`` (the homework, with weight decay)."""
    return OPTIMIZERS[config.name](config, params)


__all__ = ["Adam", "AdamConfig", "FusedOptimizer", "SGD", "SGDConfig", "build_optimizer"]
