"""labsweep's optimizers take exactly torch.optim's fused steps, keep their state in its layout, and leave
torch._dynamo unimported (which constructing a torch.optim optimizer imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from labsweep.optimizers import build_optimizer
from labsweep.schema import AdamConfig, SGDConfig

CONFIGS = {
    "sgd": SGDConfig(lr=0.005),
    "sgd_momentum": SGDConfig(lr=0.005, momentum=0.9, weight_decay=1e-4),
    "adam": AdamConfig(lr=0.001, weight_decay=1e-4),
}


def torch_optimizer(config: SGDConfig | AdamConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if isinstance(config, AdamConfig):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True)


def lab1_params(seed: int = 0) -> list[torch.nn.Parameter]:
    """The Lab 1 MLP's stacked weights for 2 replicas, and one parameter that never gets a gradient."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 10, 3072), (2, 10, 1), (2, 3, 10), (2, 3, 1), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]


def set_gradients(params: list[torch.nn.Parameter], step: int) -> None:
    generator = torch.Generator().manual_seed(1000 + step)
    for p in params[:-1]:
        p.grad = torch.randn(p.shape, generator=generator)


def clones(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


@pytest.mark.parametrize("name", CONFIGS)
def test_each_optimizer_takes_the_steps_torch_optim_takes(name: str) -> None:
    ours_params, theirs_params = lab1_params(), lab1_params()
    ours, theirs = build_optimizer(CONFIGS[name], ours_params), torch_optimizer(CONFIGS[name], theirs_params)
    for step in range(5):
        for params, optimizer in ((ours_params, ours), (theirs_params, theirs)):
            set_gradients(params, step)
            optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(ours_params, theirs_params, strict=True)), f"step {step}"
    assert ours_params[-1].equal(lab1_params()[-1])  # no gradient, no change
    theirs_state = theirs.state_dict()["state"]
    ours_state = ours.state_dict()["state"]
    assert ours_state.keys() == theirs_state.keys()
    for i, state in theirs_state.items():
        assert ours_state[i].keys() == state.keys()
        assert all(torch.equal(ours_state[i][k], v) for k, v in state.items())


@pytest.mark.parametrize("name", CONFIGS)
def test_a_state_dict_loaded_into_a_fresh_optimizer_continues_the_same_steps(name: str) -> None:
    params = lab1_params()
    optimizer = build_optimizer(CONFIGS[name], params)
    for step in range(3):
        set_gradients(params, step)
        optimizer.step()
    saved = optimizer.state_dict()
    restored_params = clones(params)
    restored = build_optimizer(CONFIGS[name], restored_params)
    restored.load_state_dict(saved)
    for step in range(3, 6):
        for p, o in ((params, optimizer), (restored_params, restored)):
            set_gradients(p, step)
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(params, restored_params, strict=True))
    assert restored.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_zero_grad_clears_every_gradient() -> None:
    params = lab1_params()
    optimizer = build_optimizer(CONFIGS["adam"], params)
    set_gradients(params, 0)
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


def test_a_state_dict_for_other_parameters_is_refused() -> None:
    optimizer = build_optimizer(CONFIGS["sgd_momentum"], lab1_params())
    other = build_optimizer(CONFIGS["sgd_momentum"], lab1_params()[:2])
    with pytest.raises(ValueError, match="does not fit"):
        other.load_state_dict(optimizer.state_dict())


def test_building_and_stepping_an_optimizer_does_not_import_torch_dynamo() -> None:
    code = (
        "import sys, torch\n"
        "from labsweep.optimizers import build_optimizer\n"
        "from labsweep.schema import AdamConfig, SGDConfig\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "for c in (SGDConfig(lr=0.1, momentum=0.9), AdamConfig()):\n"
        "    o = build_optimizer(c, [p]); o.step(); o.load_state_dict(o.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
