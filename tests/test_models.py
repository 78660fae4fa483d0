"""The networks: shapes, the report notation, and the Normalize the seed put in front of them."""

import pytest
import torch

from labsweep.models import POOLINGS, ModelSpec, Normalize, build_model, notation
from labsweep.optimizers import build_optimizer
from labsweep.schema import CNNConfig, ConfigError, MLPConfig, ModelConfig, SGDConfig, VGGConfig

MEAN, STD = (0.5074, 0.4867, 0.4411), (0.2011, 0.1987, 0.2025)


def spec(model: ModelConfig, pooling: str = "none") -> ModelSpec:
    return ModelSpec(model, num_classes=3, mean=MEAN, std=STD, pooling=pooling)


@pytest.mark.parametrize(
    "s, expected",
    [
        (spec(MLPConfig()), "FC(10), FC(3)"),
        (spec(MLPConfig(hidden=[])), "FC(3)"),
        (spec(MLPConfig(hidden=[32, 32])), "FC(32), FC(32), FC(3)"),
        (spec(CNNConfig(), pooling="avg"), "Conv(32, 5×5, s4), Conv(64, 3×3), AvgPool, FC(3)"),
        (spec(CNNConfig(), pooling="max"), "Conv(32, 5×5, s4), Conv(64, 3×3), MaxPool, FC(3)"),
        (spec(CNNConfig(), pooling="stride"), "Conv(32, 5×5, s4), Conv(64, 3×3, s2), FC(3)"),
    ],
)
def test_every_model_takes_raw_nhwc_pixels_and_has_report_notation(s: ModelSpec, expected: str) -> None:
    model = build_model(s)
    pixels = torch.randint(0, 256, (4, 32, 32, 3)).float()
    assert model(pixels).shape == (4, 3)
    assert notation(s) == expected


def test_vgg_returns_logits_for_ten_classes() -> None:
    s = ModelSpec(VGGConfig(), num_classes=10, mean=MEAN, std=STD)
    model = build_model(s).eval()
    assert model(torch.zeros(2, 32, 32, 3)).shape == (2, 10)


def test_normalize_matches_the_seed() -> None:
    x = torch.randint(0, 256, (2, 32, 32, 3)).float()
    seed_style = ((x / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)).flatten(1)
    torch.testing.assert_close(Normalize(MEAN, STD, "flat")(x), seed_style)
    nchw = Normalize(MEAN, STD, "nchw")(x)
    assert nchw.shape == (2, 3, 32, 32)
    torch.testing.assert_close(nchw.permute(0, 2, 3, 1).flatten(1), seed_style)


def test_lab2_cnn_parameter_counts_match_the_seed_architecture() -> None:
    # conv1 3*32*25+32, conv2 32*64*9+64, linear 256*3+3 for AvgPool2d(4) on the 8x8 map.
    model = build_model(spec(CNNConfig(), pooling="avg"))
    assert sum(p.numel() for p in model.parameters()) == (2400 + 32) + (18432 + 64) + (768 + 3)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="pooling"):
        build_model(spec(CNNConfig(), pooling="median"))
    stored = spec(CNNConfig(), pooling="avg").to_dict()
    with pytest.raises(ConfigError, match="pooling=median"):
        ModelSpec.from_dict({**stored, "pooling": "median"})
    with pytest.raises(ConfigError, match="model.name"):
        ModelSpec.from_dict({**stored, "name": "transformer"})
    with pytest.raises(ConfigError, match="model.name"):
        MLPConfig(name="transformer")
    with pytest.raises(ConfigError, match="optimizer.name"):
        SGDConfig(name="rmsprop")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_cnn_trains_one_step(pooling: str) -> None:
    model = build_model(spec(CNNConfig(), pooling=pooling))
    opt = build_optimizer(SGDConfig(lr=0.01, momentum=0.9), model.parameters())
    loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 32, 32, 3) * 255), torch.arange(8) % 3)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
