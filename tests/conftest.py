from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a real-image folder in ../shared/datasets; skips the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir() or not any(path.iterdir()):
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: tiny networks gain nothing from intra-op threads, and on a
    shared 2-core machine they lose a lot to contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
