"""A faithful copy of the seed notebook's Lab 1 training loop (seed file 002, "Часть 3"): the
baseline labsweep's loop is measured against. Kept as the notebook wrote it: DataLoader over a
TensorDataset of raw pixels, one-hot float targets, Normalize inside the model on every batch,
``loss.item()`` after every batch, a test pass through a shuffled DataLoader every epoch."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
import torch.optim as optim
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Normalize(nn.Module):
    def __init__(self, mean, std):  # type: ignore[no-untyped-def]
        super().__init__()
        self.mean = torch.tensor(mean)
        self.std = torch.tensor(std)

    def forward(self, input):  # type: ignore[no-untyped-def]
        x = input / 255.0
        x = x - self.mean
        x = x / self.std
        return torch.flatten(x, start_dim=1)  # nhwc -> nm


class Cifar100_MLP(nn.Module):
    def __init__(self, hidden_size=32, classes=100):  # type: ignore[no-untyped-def]
        super().__init__()
        self.norm = Normalize([0.5074, 0.4867, 0.4411], [0.2011, 0.1987, 0.2025])
        self.seq = nn.Sequential(nn.Linear(32 * 32 * 3, hidden_size), nn.ReLU(), nn.Linear(hidden_size, classes))

    def forward(self, input):  # type: ignore[no-untyped-def]
        x = self.norm(input)
        return self.seq(x)


def run_seed_loop(
    train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray, test_y: np.ndarray, *,
    num_classes: int, epochs: int = 250, hidden: int = 10, lr: float = 0.005, batch_size: int = 128, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Train as the notebook does; return test accuracy and the mean seconds per epoch."""
    torch.manual_seed(seed)
    dataloader = {}
    for (X, y), part in zip([(train_X, train_y), (test_X, test_y)], ["train", "test"]):
        tensor_x = torch.Tensor(X)
        tensor_y = F.one_hot(torch.Tensor(y).to(torch.int64), num_classes=num_classes) / 1.0
        dataset = TensorDataset(tensor_x, tensor_y)
        dataloader[part] = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = Cifar100_MLP(hidden_size=hidden, classes=num_classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr)

    steps_per_epoch = len(dataloader["train"])
    steps_per_epoch_val = len(dataloader["test"])
    start = time.perf_counter()
    for epoch in range(epochs):
        running_loss = 0.0
        model.train()
        for i, batch in enumerate(dataloader["train"], 0):
            inputs, labels = batch
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        train_loss = running_loss / steps_per_epoch
        running_loss = 0.0
        model.eval()
        with torch.no_grad():
            for i, data in enumerate(dataloader["test"], 0):
                inputs, labels = data
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                running_loss += loss.item()
        val_loss = running_loss / steps_per_epoch_val
    seconds = time.perf_counter() - start

    with torch.no_grad():
        pred = model(torch.Tensor(test_X)).argmax(-1).numpy()
    return {"test/acc": float((pred == test_y).mean()), "epoch_seconds": seconds / epochs,
            "train/loss": train_loss, "test/loss": val_loss}  # fmt: skip
