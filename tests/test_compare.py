"""The results table's comparison is calibrated: simulated studies (no training) with a known truth.

Each simulated study is what the Lab 1 study measures: 300 shared test images, 5 seeds per row. Image i has
a difficulty θ_i (logit of its accuracy, shared by every model: some images are hard for all of them); a seed
shifts its model by u ~ N(0, 0.08) on that scale; a change of configuration shifts it by δ plus an
image-specific part (the change helps some images more than others). With these numbers a row's per-seed
accuracy varies by about 2.2 points, as the real Lab 1 baseline's does (75.7 ± 2.2% over 5 seeds).

    A/A (no true difference): the verdict is not "within noise" in at most 6% of 2,000 studies;
    power (a true +5 points on the population of images and seeds): "better" in at least 80% of them;
    and the method the table used before (independent binomial error per row) for comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from labsweep.compare import Comparison, independent_comparison, paired_comparison

IMAGES, SEEDS, STUDIES = 300, 5, 2000
MU, SPREAD, SEED_SD, INTERACTION = 1.6, 1.6, 0.08, 0.3


def simulate(rng: np.random.Generator, shift: float, seeds: int = SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, row): each (seeds, images), 1 where a seed's model classified an image correctly."""
    theta = rng.normal(MU, SPREAD, IMAGES)
    extra = shift + (rng.normal(0, INTERACTION, IMAGES) if shift else 0.0)

    def row(offset: np.ndarray | float) -> np.ndarray:
        logits = theta + offset + rng.normal(0, SEED_SD, (seeds, 1))
        return (rng.random((seeds, IMAGES)) < expit(logits)).astype(np.float64)

    return row(0.0), row(extra)


def shift_for(points: float) -> float:
    """The logit shift whose difference in mean accuracy over images and seeds is ``points``."""
    rng = np.random.default_rng(0)
    theta, seed, inter = rng.normal(MU, SPREAD, 200_000), rng.normal(0, SEED_SD, 200_000), rng.normal(0, INTERACTION, 200_000)
    lo, hi = 0.0, 2.0
    for _ in range(40):
        mid = (lo + hi) / 2
        gain = float((expit(theta + seed + mid + inter) - expit(theta + seed)).mean())
        lo, hi = (mid, hi) if gain < points / 100 else (lo, mid)
    return (lo + hi) / 2


def rates(method: str, shift: float, seeds: int = SEEDS, studies: int = STUDIES) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    verdicts: list[str] = []
    for _ in range(studies):
        base, row = simulate(rng, shift, seeds)
        c: Comparison = (paired_comparison(base, row) if method == "paired"
                         else independent_comparison(base.mean(1), row.mean(1), IMAGES))  # fmt: skip
        verdicts.append(c.verdict)
    return {v: verdicts.count(v) / studies for v in ("better", "worse", "within noise")}


def test_simulated_seeds_vary_as_the_real_lab1_baseline_does() -> None:
    rng = np.random.default_rng(1)
    spreads = [100 * simulate(rng, 0.0)[0].mean(1).std(ddof=1) for _ in range(300)]
    accs = [100 * simulate(rng, 0.0)[0].mean() for _ in range(100)]
    assert 1.8 < float(np.mean(spreads)) < 2.6 and 70 < float(np.mean(accs)) < 80


def test_aa_studies_are_rarely_called_a_difference() -> None:
    paired = rates("paired", 0.0)
    assert 1 - paired["within noise"] <= 0.06, paired
    old = rates("independent", 0.0)
    assert 1 - old["within noise"] <= 0.06, old  # the old method never cried wolf either...


def test_a_true_five_point_gain_is_found() -> None:
    shift = shift_for(5.0)
    paired = rates("paired", shift)
    assert paired["better"] >= 0.80, paired
    assert paired["worse"] <= 0.001, paired
    old = rates("independent", shift)
    assert old["better"] < 0.3, old  # ...because it found almost nothing: it counted the shared images' noise twice


def test_one_seed_per_row_compares_on_the_images_alone() -> None:
    base, row = simulate(np.random.default_rng(3), shift_for(10.0), seeds=1)
    c = paired_comparison(base, row)
    assert c.method == "images" and c.low < c.delta < c.high
    assert paired_comparison(*simulate(np.random.default_rng(4), 0.0, seeds=5)).method == "paired"


def test_identical_predictions_are_no_difference_and_opposite_ones_are() -> None:
    same = np.ones((3, 50))
    assert paired_comparison(same, same).verdict == "within noise" and paired_comparison(same, same).p_value == 1.0
    half = np.tile([1.0, 0.0], (3, 25))
    assert paired_comparison(half, np.ones((3, 50))).verdict == "better"
    assert paired_comparison(np.ones((3, 50)), half).verdict == "worse"


def test_interval_and_p_value_agree() -> None:
    rng, shift = np.random.default_rng(7), shift_for(3.0)
    for _ in range(200):
        c = paired_comparison(*simulate(rng, shift))
        assert (c.p_value < 0.05) == (c.verdict != "within noise")


@pytest.mark.parametrize("bad", [np.ones(5), np.ones((2, 5, 1))])
def test_shapes_are_checked(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="seeds, images"):
        paired_comparison(bad, np.ones((2, 5)))


if __name__ == "__main__":  # python tests/test_compare.py: the rates behind the README and the closing note
    five = shift_for(5.0)
    for method in ("paired", "independent"):
        print(f"{method}: A/A {rates(method, 0.0)}; +5 pts {rates(method, five)}")
    print(f"paired, one seed per row: A/A {rates('paired', 0.0, seeds=1)}")
