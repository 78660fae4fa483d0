"""One torch thread for the from-scratch labs' tiny tensors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the previous count. Ops on tensors of a few
    hundred rows gain nothing from splitting across threads, and when another process holds a core
    the threads' barriers make such a loop 10-20x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
