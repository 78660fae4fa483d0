"""The course's networks. Every model takes raw NHWC pixels (0-255) and normalises inside,
as the seed's ``Normalize`` does, so a saved or exported model takes raw pixels too."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labsweep.schema import POOLINGS, ConfigError, ModelConfig, check_pooling, model_from_dict

__all__ = ["NETS", "POOLINGS", "Classifier", "ModelSpec", "Normalize", "build_model", "cnn", "mlp", "notation", "vgg"]


@dataclass(frozen=True)
class ModelSpec:
    """A model config resolved against its data: everything needed to rebuild the model. A checkpoint
    stores it as a plain dict (``to_dict``) and ``from_dict`` + ``build_model`` rebuild the model from it."""

    model: ModelConfig
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: str = "none"  # cnn: avg | max | stride

    def __post_init__(self) -> None:
        check_pooling(self.model, self.pooling)  # pooling only where the model has a pooling stage

    @property
    def name(self) -> str:
        return self.model.name

    def to_dict(self) -> dict[str, Any]:
        """Flat plain data: the model's config fields, its pooling, class count and normalisation."""
        return {**dataclasses.asdict(self.model), "pooling": self.pooling, "num_classes": self.num_classes,
                "mean": list(self.mean), "std": list(self.std)}  # fmt: skip

    @staticmethod
    def from_dict(fields: Mapping[str, Any]) -> ModelSpec:
        """The spec ``to_dict`` wrote (or an older checkpoint's flat spec), checked as the command line is:
        raises ConfigError naming what is wrong."""
        if not isinstance(fields, Mapping):
            raise ConfigError("the model spec is not a mapping of fields")
        model = model_from_dict(dict(fields))
        num_classes, pooling = fields.get("num_classes"), fields.get("pooling", "none")
        mean, std = fields.get("mean"), fields.get("std")
        bad = [name for name, ok in (
            ("num_classes", isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1),
            ("mean", _numbers(mean, 3)), ("std", _numbers(std, 3) and all(s > 0 for s in std)),  # type: ignore[union-attr]
            ("pooling", isinstance(pooling, str))) if not ok]  # fmt: skip
        if bad:
            raise ConfigError(f"invalid {', '.join(bad)}: {dict(fields)}")
        return ModelSpec(model, num_classes, tuple(mean), tuple(std), pooling)  # type: ignore[arg-type]


def _numbers(value: Any, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))  # fmt: skip


class Normalize(nn.Module):
    """Raw NHWC pixels -> (x/255 - mean)/std, then flattened (MLP) or permuted to NCHW (CNNs)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], layout: str) -> None:
        super().__init__()
        if layout not in ("flat", "nchw"):
            raise ValueError(f"layout must be 'flat' or 'nchw', got {layout!r}")
        self.layout = layout
        std_t = torch.tensor(std, dtype=torch.float32)
        # One multiply-add per pixel: x * scale + shift == (x/255 - mean)/std.
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * self.scale + self.shift
        return x.flatten(1) if self.layout == "flat" else x.permute(0, 3, 1, 2)


class Classifier(nn.Module):
    """``net(normalize(pixels))``. The training loop normalises the dataset once and calls ``net``
    directly; everything else (evaluation on raw images, export, predict) calls the whole model."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def mlp(hidden: Sequence[int], num_classes: int, in_features: int = 32 * 32 * 3) -> nn.Sequential:
    """Lab 1: Linear+ReLU for each hidden size, then Linear to the classes (``hidden=[]``: linear model)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(pooling: str, num_classes: int, channels: int = 32) -> nn.Sequential:
    """Lab 2: Conv(c, 5x5, s4) ReLU Conv(2c, 3x3) ReLU, pooling, Flatten, Linear. 32x32 -> 8x8 after conv 1."""
    c1, c2 = channels, 2 * channels
    if pooling == "avg":  # AvgPool2d(4): 8x8 -> 2x2
        conv2, pool, features = nn.Conv2d(c1, c2, 3, stride=1, padding=1), [nn.AvgPool2d(4)], c2 * 2 * 2
    elif pooling == "max":  # global max pool: 8x8 -> 1x1
        conv2, pool, features = nn.Conv2d(c1, c2, 3, stride=1, padding=1), [nn.AdaptiveMaxPool2d(1)], c2
    elif pooling == "stride":  # the second conv halves the map: 8x8 -> 4x4, no pooling layer
        conv2, pool, features = nn.Conv2d(c1, c2, 3, stride=2, padding=1), [], c2 * 4 * 4
    else:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return nn.Sequential(
        nn.Conv2d(3, c1, 5, stride=4, padding=2),
        nn.ReLU(),
        conv2,
        nn.ReLU(),
        *pool,
        nn.Flatten(),
        nn.Linear(features, num_classes),
    )


def vgg(num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """The homework's best net ("vgg + drop & BN @ conv + drop @ fc", 0.8228 on CIFAR-10).

    Unpadded 3x3 convs: 32 -> 30 -> 28 -> pool 14 -> 12 -> 10 -> pool 5 -> 3 -> 1, so 512 features.
    The seed ended with Dropout on the logits and a Softmax; here the net returns logits (the loss
    applies log-softmax), and dropout on logits is left out because it only adds noise to the loss.
    """
    p = dropout
    return nn.Sequential(
        nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Dropout(p),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Dropout(p), nn.BatchNorm2d(128),
        nn.Conv2d(128, 256, 3), nn.ReLU(), nn.BatchNorm2d(256),
        nn.Conv2d(256, 256, 3), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Dropout(p), nn.BatchNorm2d(256),
        nn.Conv2d(256, 512, 3), nn.ReLU(), nn.BatchNorm2d(512),
        nn.Conv2d(512, 512, 3), nn.ReLU(), nn.Dropout(p), nn.BatchNorm2d(512),
        nn.Flatten(),
        nn.Linear(512, 256), nn.ReLU(), nn.Dropout(p),
        nn.Linear(256, num_classes),
    )  # fmt: skip


def _mlp_notation(spec: ModelSpec) -> str:
    return ", ".join(f"FC({n})" for n in (*spec.model.hidden, spec.num_classes))


def _cnn_notation(spec: ModelSpec) -> str:
    c = spec.model.channels
    conv2 = f"Conv({2 * c}, 3×3, s2)" if spec.pooling == "stride" else f"Conv({2 * c}, 3×3)"
    pool = {"avg": ["AvgPool"], "max": ["MaxPool"], "stride": []}[spec.pooling]
    return ", ".join([f"Conv({c}, 5×5, s4)", conv2, *pool, f"FC({spec.num_classes})"])


def _vgg_notation(spec: ModelSpec) -> str:
    return f"VGG(64-128-256-256-512-512, BN, Dropout {spec.model.dropout}), FC(256), FC({spec.num_classes})"


@dataclass(frozen=True)
class Net:
    """How to build one kind of model: its input layout, its layers, the report's notation for it."""

    layout: str  # what Normalize hands the net: "flat" (MLP) or "nchw" (CNNs)
    layers: Callable[[ModelSpec], nn.Sequential]
    notation: Callable[[ModelSpec], str]


# The one place a model name is dispatched (its config's shape is in labsweep.schema.MODELS).
NETS: dict[str, Net] = {
    "mlp": Net("flat", lambda s: mlp(s.model.hidden, s.num_classes), _mlp_notation),
    "cnn": Net("nchw", lambda s: cnn(s.pooling, s.num_classes, s.model.channels), _cnn_notation),
    "vgg": Net("nchw", lambda s: vgg(s.num_classes, s.model.dropout), _vgg_notation),
}


def build_model(spec: ModelSpec) -> Classifier:
    """Build the classifier a spec describes (fresh weights from the global torch seed)."""
    net = NETS[spec.name]
    return Classifier(Normalize(spec.mean, spec.std, net.layout), net.layers(spec))


def notation(spec: ModelSpec) -> str:
    """The report's network notation: ``FC(10), FC(3)``; ``Conv(32, 5×5, s4), Conv(64, 3×3), AvgPool, FC(3)``."""
    return NETS[spec.name].notation(spec)
