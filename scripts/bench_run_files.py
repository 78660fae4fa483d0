"""What writing one trained run's files costs, as a job writes them (labsweep.run_files.write_run_files while a
second process draws its figure_tasks, labsweep.drawing) and all in one process, and each file's share.

    python scripts/bench_run_files.py                   # the Lab 1 MLP, 250 epochs on the CIFAR-10 slice
    python scripts/bench_run_files.py --epochs 1000     # a longer history (the learning curves' points)

One replica is trained once; then its files are written --repeats times into fresh folders, the two ways
alternately (the medians are printed), and each figure, text and checkpoint is timed on its own the same way. To
compare two commits, run it from each checkout (PYTHONPATH=<checkout>/src) one after the other.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from labsweep import image_predictions, reports
from labsweep.atomic import save_figure
from labsweep.build import build_training, model_spec
from labsweep.checkpoint import save_checkpoint
from labsweep.datasets import load_cifar10
from labsweep.drawing import IN_PROCESS_ENV, drawing
from labsweep.loop import evaluate
from labsweep.run_files import TrainedRun, figure_tasks, summary_metrics, write_run_files
from labsweep.schema import MLPConfig, SGDConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # the first call imports and warms up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the slice's md5 warnings
    data = load_cifar10(args.data, [0, 1, 2], verify=False, download=False, max_train_per_class=500, max_test_per_class=100)
    spec = model_spec(MLPConfig(hidden=[10]), "none", data)
    training = build_training(spec, SGDConfig(lr=0.005), data, [0])
    (result,) = training.fit(epochs=args.epochs, batch_size=128)
    final_train, final_test = evaluate(training.net, training.train)[0], evaluate(training.net, training.test)[0]
    test_set = image_predictions.test_set_of(data.name, data.class_ids, data.test_x, data.test_y)

    def trained() -> TrainedRun:
        return TrainedRun(training.single(0), spec, data, {"seed": 0}, result, final_train, final_test, args.epochs, test_set)

    names = reports.target_names(data.class_ids, data.class_names)
    y, predicted = data.test_y, final_test.predictions.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        folders = iter(range(10**6))

        def whole(in_process: bool) -> Callable[[], None]:
            def write() -> None:
                run, folder = trained(), out / f"run{next(folders)}"
                os.environ[IN_PROCESS_ENV] = "1" if in_process else "0"
                try:
                    with drawing(figure_tasks(folder, run)) as figures:
                        write_run_files(folder, run, summary_metrics(run, 1.0), torch.device("cpu"))
                        figures.wait()
                finally:
                    del os.environ[IN_PROCESS_ENV]
            return write

        parts = {
            "learning_curves.png": lambda: save_figure(reports.learning_curves_figure(result.history, result.best_epoch),
                                                       out / "curves.png"),  # fmt: skip
            "confusion_matrix_<split>.png (one)": lambda: save_figure(reports.confusion_figure(y, predicted, names, "test"),
                                                                     out / "confusion.png"),  # fmt: skip
            "first_layer_weights.png": lambda: save_figure(reports.first_layer_figure(training.single(0).net[0].weight),
                                                           out / "first.png"),  # fmt: skip
            "classification_report_<split>.txt (one)": lambda: reports.classification_text(y, predicted, names),
            "model_summary.txt": lambda: reports.model_summary(training.single(0)),
            "checkpoint (one of three)": lambda: save_checkpoint(out / "c.pt", training.single(0), spec, class_ids=data.class_ids,
                                                                class_names=data.class_names, config={}, epoch=1, metrics={}),  # fmt: skip
        }
        two, one = [], []
        for _ in range(3):  # alternately, so that both see the same machine
            two.append(median_ms(whole(in_process=False), args.repeats))
            one.append(median_ms(whole(in_process=True), args.repeats))
        print(f"a run's files, Lab 1 MLP, {args.epochs} epochs: {statistics.median(two):.0f} ms a run as a job writes them "
              f"(figures in a second process; {', '.join(f'{t:.0f}' for t in two)}), {statistics.median(one):.0f} ms "
              f"all in this process ({', '.join(f'{t:.0f}' for t in one)}); medians of {args.repeats}, three rounds")  # fmt: skip
        for name, fn in parts.items():
            print(f"  {name:42s} {median_ms(fn, args.repeats):6.1f} ms")


if __name__ == "__main__":
    main()
