"""K copies of one network trained at once (``trainer.replicas=K``; K=1 is an ordinary run).

Replica k has its own initialisation and its own batch order, and gets exactly the gradient its
single run would get: the loss is the sum of the replicas' own mean losses. The training loop sees
two operations, whatever the network:

- ``compute_gradients(x, y)``: the K batches laid one after another, (K*b, ...) and (K*b,); sets
  every parameter's ``.grad`` and returns each replica's mean loss and accuracy on its batch;
- ``net(x)``: one batch shared by all replicas (evaluation), (b, ...) -> (K, b, classes).

``replicate(nets)`` picks the implementation, by measurement (scripts/bench.py):

- ``StackedMLP`` for MLPs (a Sequential of Linear and ReLU), K=1 included: each Linear's weights
  stacked into one (K, out, in) tensor, activations kept as (K, features, batch) so that the
  forward product and the weight gradient are both CPU-friendly batched matrix products, and the
  backward pass written out by hand. On the Lab 1 MLP, autograd's bookkeeping was a third of an
  epoch: 6.8 ms against 4.7 ms per epoch written out (compute alone, the products and the batch
  gather: 4.0 ms). The (K, batch, features) layout that ``torch.func.vmap`` produces took 4.2 ms
  against 1.2 ms for K=5, its weight gradient being a slow transposed ``bmm``.
  Measured and not taken: oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, an internal op)
  for the products, 10% faster at K=1 but slower at K=8 (one call per replica).
- ``ModuleReplicas`` for everything else: a loop over plain copies with autograd. Vmapped (grouped)
  convolutions, each replica on its own batches, reached only 0.75-0.81x the throughput of this loop
  for K=4 CNNs; and nets with BatchNorm or Dropout need their buffers and randomness to behave
  exactly as in a single run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Replicas(nn.Module):
    """What the training loop needs from K replicas; see the module docstring."""

    k: int

    def compute_gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """A copy of replica ``k``'s state_dict, with a plain network's keys."""
        raise NotImplementedError

    def single(self, k: int) -> nn.Module:
        """Replica ``k`` as a plain network: what its checkpoint and export hold."""
        raise NotImplementedError


def replicate(nets: Sequence[nn.Module]) -> Replicas:
    """The K networks (same architecture, each with its own initial weights) as one Replicas."""
    return StackedMLP(nets) if is_mlp(nets[0]) else ModuleReplicas(nets)


def is_mlp(net: nn.Module) -> bool:
    """A Sequential of Linear and ReLU layers ending in a Linear: what StackedMLP can stack."""
    children = list(net.children())
    return (
        isinstance(net, nn.Sequential)
        and all(isinstance(m, (nn.Linear, nn.ReLU)) for m in children)
        and isinstance(children[-1], nn.Linear)
        and all(isinstance(a, nn.Linear) != isinstance(b, nn.Linear) for a, b in zip(children, children[1:]))
    )


class ModuleReplicas(Replicas):
    """Plain copies, one after another, with autograd."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.k = len(nets)
        self.nets = nn.ModuleList(nets)

    def compute_gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self.parameters():
            p.grad = None
        if self.k == 1:
            logits = self.nets[0](x)
        else:
            logits = torch.cat([net(part) for net, part in zip(self.nets, x.chunk(self.k), strict=True)])
        loss = F.cross_entropy(logits, y, reduction="none").view(self.k, -1).mean(1)  # (K,)
        loss.sum().backward()
        correct = logits.detach().argmax(1) == y
        return loss.detach(), correct.view(self.k, -1).float().mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets])

    def state(self, k: int) -> dict[str, torch.Tensor]:
        return {n: v.detach().clone() for n, v in self.nets[k].state_dict().items()}

    def single(self, k: int) -> nn.Module:
        return self.nets[k]


class StackedMLP(Replicas):
    """K MLPs as stacked (K, out, in) weights and (K, out, 1) biases, trained with a hand-written
    backward pass (checked against autograd in tests/test_replicas.py)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.k = len(nets)
        self.template = copy.deepcopy(nets[0])  # rebuilds plain single models
        self.linear_names = [name for name, m in nets[0].named_children() if isinstance(m, nn.Linear)]
        layers = [[getattr(net, name) for net in nets] for name in self.linear_names]
        self.weights = nn.ParameterList([torch.stack([m.weight.detach() for m in ms]) for ms in layers])
        self.biases = nn.ParameterList([torch.stack([m.bias.detach() for m in ms]).unsqueeze(2) for ms in layers])

    def _shards(self, b: int, device: torch.device) -> int:
        """Into how many pieces to cut each replica's batch of ``b``. One matrix product of a (10, 3072)
        weight with a 3072 x 128 batch keeps only one of two CPU threads busy; a batched product over
        two halves keeps both (measured on the Lab 1 MLP: 5.0 against 5.7 ms per epoch). So on the CPU,
        with fewer replicas than threads, every replica's batch is cut into threads/K pieces."""
        shards = max(1, torch.get_num_threads() // self.k) if device.type == "cpu" else 1
        while b % shards:
            shards -= 1
        return shards

    def _per_piece(self, t: torch.Tensor, shards: int) -> torch.Tensor:
        """(K, ...) -> (K*shards, ...): replica k's tensor once for each piece of its batch. For K=1 one ``expand``:
        a view with the same strides as the general form gives (so the same products), in one operation instead of
        three (the Lab 1 MLP's four tensors: 6 instead of 16 us a step). For K > 1 the general form, a copy."""
        if self.k == 1:
            return t.expand(shards, -1, -1)
        return t.unsqueeze(1).expand(-1, shards, -1, -1).flatten(0, 1)

    def _forward(self, h: torch.Tensor, shards: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``h``: (K*shards, in, b/shards). Returns every layer's output, the last one being the logits
        (K*shards, classes, b/shards), and the weights as the products saw them."""
        outputs, weights = [h], []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if shards > 1:  # every piece of replica k's batch sees replica k's weights
                w, b = self._per_piece(w, shards), self._per_piece(b, shards)
            z = torch.baddbmm(b, w, outputs[-1])  # (K, out, in) @ (K, in, b) + (K, out, 1)
            outputs.append(z.relu_() if i < last else z)
            weights.append(w)
        return outputs, weights

    @torch.no_grad()
    def compute_gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = self.k, len(y) // self.k
        s = self._shards(b, x.device)
        (*activations, logits), weights = self._forward(x.view(k * s, b // s, -1).transpose(1, 2), s)
        y = y.view(k * s, 1, b // s)
        log_probs = logits.log_softmax(1)  # (K*s, classes, b/s)
        loss = log_probs.gather(1, y).view(k, -1).mean(1).neg_()
        # max(...).indices: the same first maximum as argmax, 20x faster across this strided class axis.
        acc = (logits.max(1, keepdim=True).indices == y).view(k, -1).float().mean(1)
        # Gradient of each replica's mean cross-entropy with respect to its logits: (softmax - one_hot) / b.
        grad = log_probs.exp_().scatter_add_(1, y, torch.full(y.shape, -1.0, device=y.device)).div_(b)
        for i in reversed(range(len(weights))):
            a = activations[i]  # this layer's input, (K*s, in, b/s)
            bias_grad = grad.sum(2, keepdim=True)
            if s > 1:  # add up the pieces of each replica's batch
                weight_grad = torch.bmm(grad, a.transpose(1, 2)).unflatten(0, (k, s)).sum(1)
                bias_grad = bias_grad.unflatten(0, (k, s)).sum(1)
            else:  # into last step's gradient: a fresh (K, 128, 3072) tensor each step costs its page faults
                weight_grad = torch.bmm(grad, a.transpose(1, 2), out=self.weights[i].grad)
            self.weights[i].grad, self.biases[i].grad = weight_grad, bias_grad
            if i > 0:  # back through the layer and the ReLU before it (its output is this layer's input)
                grad = torch.bmm(weights[i].transpose(1, 2), grad).mul_(a > 0)
        return loss, acc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        s = self._shards(b, x.device)
        h = x.view(s, b // s, -1).transpose(1, 2)  # (s, in, b/s): a view
        h = h.expand(self.k, -1, -1) if s == 1 else h.repeat(self.k, 1, 1) if self.k > 1 else h
        logits = self._forward(h, s)[0][-1]  # (K*s, classes, b/s)
        return logits.view(self.k, s, -1, b // s).permute(0, 1, 3, 2).reshape(self.k, b, -1)  # (K, b, classes)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        state = {}
        for name, w, b in zip(self.linear_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = w[k].detach().clone()
            state[f"{name}.bias"] = b[k, :, 0].detach().clone()
        return state

    def single(self, k: int) -> nn.Module:
        net = copy.deepcopy(self.template)
        net.load_state_dict(self.state(k))
        return net
