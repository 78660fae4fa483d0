"""Several independent copies of one network trained at once (``trainer.replicas=K``).

Replica k has its own initialisation and its own batch order; the loss is the sum of the replicas'
own mean losses, so each replica's gradient is exactly the one its single run would get. Maps the
K batches laid one after another, (K*b, ...) -> (K*b, classes), or one shared (b, ...) batch ->
(K, b, classes) for evaluation. With K=1 it is the plain network.

Two ways to run the K copies, chosen by measurement (scripts/bench.py):
- ``vectorized`` (MLPs): each Linear's weights stacked into one (K, out, in) tensor and applied to
  all K batches with one batched matrix product. Activations are kept as (K, features, batch) so
  that both the forward product and the weight gradient are CPU-friendly ``bmm`` calls (measured for
  K=5, 128x3072 -> 10: 1.2 ms forward+backward against 2.1 ms for five separate Linear layers; the
  (K, batch, features) layout that ``torch.func.vmap`` produces took 4.2 ms, its weight gradient
  being a slow transposed ``bmm``).
- a plain loop over the copies: for the CNN, whose vmapped (grouped) convolutions ran slower than
  one copy after another, and for nets with BatchNorm or Dropout, whose buffers and randomness must
  behave exactly as in a single run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class Replicas(nn.Module):
    def __init__(self, nets: Sequence[nn.Module], vectorized: bool) -> None:
        super().__init__()
        self.k = len(nets)
        self.vectorized = vectorized and self.k > 1
        if self.vectorized:
            self.template = copy.deepcopy(nets[0])  # rebuilds plain single models
            self.linear_names = [name for name, m in nets[0].named_children() if isinstance(m, nn.Linear)]
            layers = [[getattr(net, name) for net in nets] for name in self.linear_names]
            # Stacked copies of the replicas' own initial weights: (K, out, in) and (K, out, 1).
            self.weights = nn.ParameterList([torch.stack([m.weight.detach() for m in ms]) for ms in layers])
            self.biases = nn.ParameterList([torch.stack([m.bias.detach() for m in ms]).unsqueeze(2) for ms in layers])
        else:
            self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x``: the K replicas' batches one after another, (K*b, ...) -> (K*b, classes); or with
        ``shared`` one (b, ...) batch for all replicas -> (K, b, classes)."""
        if self.k == 1:  # an ordinary run: the plain network, nothing added per batch
            out = self.nets[0](x)
            return out.unsqueeze(0) if shared else out
        if not self.vectorized:
            parts = [x] * self.k if shared else x.chunk(self.k)
            out = torch.stack([net(part) for net, part in zip(self.nets, parts, strict=True)])
            return out if shared else out.flatten(0, 1)
        h = (x.expand(self.k, *x.shape) if shared else x.unflatten(0, (self.k, -1))).transpose(1, 2)  # (K, in, b)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, w, h)  # (K, out, in) @ (K, in, b) + (K, out, 1) -> (K, out, b)
            if i < last:
                h = h.relu()
        out = h.transpose(1, 2)  # (K, b, classes)
        return out if shared else out.flatten(0, 1)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """A copy of replica ``k``'s state_dict, with a plain network's keys."""
        if not self.vectorized:
            return {n: v.detach().clone() for n, v in self.nets[k].state_dict().items()}
        state = {}
        for name, w, b in zip(self.linear_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = w[k].detach().clone()
            state[f"{name}.bias"] = b[k, :, 0].detach().clone()
        return state

    def single(self, k: int) -> nn.Module:
        """Replica ``k`` as a plain network (a copy): what its checkpoint and export hold."""
        if not self.vectorized:
            return self.nets[k]
        net = copy.deepcopy(self.template)
        net.load_state_dict(self.state(k))
        return net


def can_vectorize(net: nn.Module) -> bool:
    """Only an MLP (a Sequential of Linear and ReLU) is stacked; anything else runs as a loop."""
    children = list(net.children())
    return isinstance(net, nn.Sequential) and all(isinstance(m, (nn.Linear, nn.ReLU)) for m in children) and isinstance(
        children[-1], nn.Linear
    )
