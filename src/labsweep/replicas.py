"""Several independent copies of one network trained at once (``trainer.replicas=K``).

Replica k has its own initialisation and its own batch order; the loss is the sum of the replicas'
own mean losses, so each replica's gradient is exactly the one its single run would get. Maps
(K, B, ...) -> (K, B, classes), or a shared (B, ...) -> (K, B, classes) for evaluation.

Two ways to run the K copies, chosen by measurement (scripts/bench.py):
- ``vectorized``: the weights stacked along a leading replica dimension and the net run under
  ``torch.func.vmap``, so each Linear becomes one batched matrix product for all K copies. Used for
  the MLP, where it multiplies throughput.
- a plain loop over the copies: for the CNN, whose vmapped (grouped) convolutions ran slower than
  one copy after another, and for nets with BatchNorm or Dropout, whose buffers and randomness vmap
  does not handle the way a single run does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class Replicas(nn.Module):
    def __init__(self, nets: Sequence[nn.Module], vectorized: bool) -> None:
        super().__init__()
        self.k = len(nets)
        self.vectorized = vectorized and self.k > 1
        if self.vectorized:
            params, buffers = stack_module_state(list(nets))
            self._names = list(params)
            # ParameterDict keys may not contain dots.
            self.stacked = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(p.detach().clone()) for n, p in params.items()})
            for name, buf in buffers.items():
                self.register_buffer("buf__" + name.replace(".", "__"), buf.clone())
            self._buffer_names = list(buffers)
            self.template = copy.deepcopy(nets[0])  # a real copy: rebuilds plain single models
            self._stateless = copy.deepcopy(nets[0]).to("meta")
        else:
            self.nets = nn.ModuleList(nets)

    def _stacked_params(self) -> dict[str, torch.Tensor]:
        return {n: self.stacked[n.replace(".", "__")] for n in self._names}

    def _stacked_buffers(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "buf__" + n.replace(".", "__")) for n in self._buffer_names}

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._stateless, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x``: (K, B, ...) one batch per replica, or with ``shared`` one (B, ...) batch for all."""
        if self.vectorized:
            return vmap(self._one, in_dims=(0, 0, None if shared else 0))(self._stacked_params(), self._stacked_buffers(), x)
        return torch.stack([net(x if shared else x[k]) for k, net in enumerate(self.nets)])

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """A copy of replica ``k``'s state_dict, with a plain network's keys."""
        if not self.vectorized:
            return {n: v.detach().clone() for n, v in self.nets[k].state_dict().items()}
        state = {n: p[k].detach().clone() for n, p in self._stacked_params().items()}
        return state | {n: b[k].clone() for n, b in self._stacked_buffers().items()}

    def single(self, k: int) -> nn.Module:
        """Replica ``k`` as a plain network (a copy): what its checkpoint and export hold."""
        if not self.vectorized:
            return self.nets[k]
        net = copy.deepcopy(self.template)
        net.load_state_dict(self.state(k))
        return net


def can_vectorize(net: nn.Module) -> bool:
    """Only plain Linear/ReLU stacks: BatchNorm buffers and Dropout randomness stay per-copy loops."""
    return all(isinstance(m, (nn.Sequential, nn.Linear, nn.ReLU, nn.Flatten)) for m in net.modules())
