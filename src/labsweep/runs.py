"""What a job's MLflow runs are called and tagged with (and what their summary metrics were called before), how a
configuration is identified (its hash: the results table's row key, and with the seed the identity that skips
finished jobs), and which seeds of a job still need training. Everything here works on plain data: the typed
config as a dict."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labsweep.paths import PROJECT_ROOT
from labsweep.schema import Config

log = logging.getLogger("labsweep")

# Keys that do not change what a job computes: left out of the config hash (the table's row key).
NOT_PART_OF_RESULT = ("tracking", "trainer.progress", "trainer.device", "trainer.eval_batch_size", "trainer.threads",
                      "trainer.replicas", "trainer.resume", "trainer.checkpoint_every_s", "dataset.root",
                      "dataset.download", "dataset.verify", "dataset.url")  # fmt: skip

# A run's summary metrics, renamed: MLflow's run page draws one chart section per metric prefix (what comes
# before the last "/"), in alphabetical order, and the metrics with no prefix last, under "Model metrics". So the
# learning curves keep their prefixes (train/, test/) and come first; the one-value summaries have none. Runs
# logged before the rename carry the old names: ``current_names`` reads both.
RENAMED = {"best/epoch": "best_epoch", "best/test/loss": "best_test_loss", "best/test/acc": "best_test_acc",
           "best/train/acc": "best_train_acc", "final/train/loss": "final_train_loss", "final/train/acc": "final_train_acc",
           "final/test/loss": "final_test_loss", "final/test/acc": "final_test_acc",
           "time/train_seconds": "train_seconds", "time/epoch_ms": "epoch_ms"}  # fmt: skip


def current_names(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics with the summary names of today (an older run's ``final/test/acc`` as ``final_test_acc``)."""
    return {RENAMED.get(k, k): v for k, v in metrics.items()}


@dataclass(frozen=True)
class Launch:
    """What Hydra tells a job about how it was launched; read once, by the entrypoint."""

    output_dir: Path
    choices: Mapping[str, str] = field(default_factory=dict)  # the config groups' choices: model=cnn, ...
    overrides: tuple[str, ...] = ()  # the command line's overrides, as typed
    derived: tuple[str, ...] = ()  # keys whose value the config computes by interpolation (a scaled lr)
    job_num: int = -1
    multirun: bool = False


class JobSkipped(Exception):
    """A sweep job whose exact configuration already has a FINISHED run."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"a FINISHED run with this configuration exists: {run_id}")
        self.run_id = run_id


def as_dict(config: Config) -> dict[str, Any]:
    """The typed config as plain data: MLflow params, ``config.yaml``, checkpoints, hashes."""
    return dataclasses.asdict(config)


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key) or {}
    tree.pop(leaf, None)


def config_hash(resolved: Mapping[str, Any], *, with_seed: bool) -> str:
    """A short hash of what a job computes. Without the seed it is the results table's row key;
    with it, the identity used to skip jobs that already have a FINISHED run."""
    tree = json.loads(json.dumps(resolved, default=str))
    for key in NOT_PART_OF_RESULT:
        _drop(tree, key)
    if not with_seed:
        tree.pop("seed", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Replica:
    """One seed of a job: its config (as plain data), run key (hash with the seed) and row key (without)."""

    seed: int
    config: dict[str, Any]
    run_key: str
    row_key: str


def replicas_to_train(config: Config, skip_finished: bool) -> list[Replica]:
    """Seeds ``seed .. seed + trainer.replicas - 1`` of the job, each with its own config. With
    ``skip_finished`` (a sweep job), seeds that have a FINISHED run are left out; JobSkipped when none is left."""
    from labsweep.tracking import finished_run  # MLflow: imported once a job really runs

    resolved = as_dict(config)
    replicas = []
    for seed in range(config.seed, config.seed + config.trainer.replicas):
        tree = {**resolved, "seed": seed}
        replicas.append(Replica(seed, tree, config_hash(tree, with_seed=True), config_hash(tree, with_seed=False)))
    if not skip_finished:
        return replicas
    done = {r.seed: finished_run(config.tracking.uri, config.tracking.experiment, r.run_key) for r in replicas}
    if all(done.values()):
        raise JobSkipped(", ".join(str(run_id) for run_id in done.values()))
    for seed, run_id in done.items():
        if run_id:
            log.info("seed %d already has a FINISHED run %s: not training it again", seed, run_id)
    return [r for r in replicas if not done[r.seed]]


# --------------------------------------------------------------------------- names and tags

SHORT_NAMES = {"batch_size": "batch", "experiment/lab1_points": "point", "divisor": "lr÷"}


def run_name(config: Config, launch: Launch, swept: Sequence[str] = (), epochs: int | None = None) -> str:
    """Name a run after what its command line (in a sweep: its swept keys) changed, plus the values
    derived from it: ``batch=32 epochs=64 seed=1``, ``model=cnn pooling=max``. ``epochs`` is given when
    the job derived them from an iteration budget."""
    if config.tracking.run_name:
        return config.tracking.run_name
    parts, seed_part = [], None
    for override in launch.overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(("hydra.", "tracking.")) or (swept and key not in swept):
            continue
        if key == "seed":
            seed_part = override
            continue
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{SHORT_NAMES.get(short, short)}={value}")
    if epochs is not None:
        parts.append(f"epochs={epochs}")
    if "optimizer.lr" in launch.derived:
        parts.append(f"lr={config.optimizer.lr:.3g}")
    if seed_part:
        parts.append(seed_part)
    choices = launch.choices
    return " ".join(parts) or choices.get("experiment") or f"{choices.get('dataset', '')}-{choices.get('model', '')}"


def replica_name(base: str, seed: int) -> str:
    return " ".join([p for p in base.split() if not p.startswith("seed=")] + [f"seed={seed}"])



@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code this process runs: asked of git once (every run's tags and every resume check
    need it; it was one `git rev-parse` process per call, two per run)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def source_tags() -> dict[str, str]:
    """MLflow's own tags for who ran what: the UI's Source and User columns."""
    import getpass

    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "labsweep-train"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        pass
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_tags(replica: Replica, launch: Launch, sweep: Any, **extra: Any) -> dict[str, Any]:
    """Tags every run carries: the group choices, the table's row key, the sweep, the code version."""
    tags = {f"choice.{group}": option for group, option in launch.choices.items() if not group.startswith("hydra")}
    tags |= {"config_hash": replica.row_key, "run_key": replica.run_key, "seed": replica.seed,
             "git_commit": git_commit() or "unknown", **source_tags(), **extra}  # fmt: skip
    if sweep:
        tags |= {"sweep_id": sweep.sweep_id, "job_num": sweep.job_num}
    return tags
