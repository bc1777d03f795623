import os

import pytest
import torch

# two cores, possibly two xdist workers: keep torch from oversubscribing
torch.set_num_threads(max(1, (os.cpu_count() or 2) // (2 if os.environ.get("PYTEST_XDIST_WORKER") else 1)))


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
