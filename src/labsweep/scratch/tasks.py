"""The from-scratch tasks by name: the one place ``task=regression|binary|numpy_mlp`` is dispatched, and
how each one's options come from the typed config (the schema checked them: ``labsweep.schema.Config``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labsweep.schema import Config


@dataclass(frozen=True)
class ScratchTask:
    run: Callable[..., dict[str, float]]  # run(**options, seed=, log_metrics=, output_dir=) -> summary metrics
    options: dict[str, Any]
    notation: str  # the report's network notation: FC(16), FC(1)


def scratch_task(config: Config) -> ScratchTask:
    from labsweep.scratch import binary, numpy_mlp, regression  # imported here: only these tasks need them

    hidden, lr, ds, trainer = config.model.hidden, config.optimizer.lr, config.dataset, config.trainer
    if config.task == "regression":
        options = {"hidden": hidden[0], "lr": lr, "iterations": trainer.iterations, "noise": ds.noise,
                   "plot_every": trainer.plot_every, "log_every": trainer.log_every}  # fmt: skip
        return ScratchTask(regression.run_regression, options, _notation(hidden, 1))
    if config.task == "binary":
        options = {"dataset": ds.name, "n": ds.n, "noise": ds.noise, "hidden": hidden[0], "lr": lr,
                   "iterations": trainer.iterations, "log_every": trainer.log_every}  # fmt: skip
        return ScratchTask(binary.run_binary, options, _notation(hidden, 1))
    options = {"dataset": ds.name, "n": ds.n, "noise": ds.noise if ds.noise is not None else 0.0, "hidden": hidden,
               "epochs": trainer.epochs, "alpha": lr, "batch_size": trainer.batch_size}  # fmt: skip
    return ScratchTask(numpy_mlp.run_numpy_mlp, options, _notation(hidden, 3 if ds.name == "blobs" else 2))


def _notation(hidden: list[int], outputs: int) -> str:
    return ", ".join(f"FC({n})" for n in (*hidden, outputs))
