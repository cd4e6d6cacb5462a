"""A fixture for test files that run many short RecBole trainings on a 2-core box."""
import pytest


@pytest.fixture
def quick_runs(monkeypatch):
    """RecBole's get_environment samples CPU load for one whole second (psutil.cpu_percent(interval=1))
    after every run, only for a log table: sample without waiting. And use one torch thread: on
    tensors this small a second thread only adds spin-waits, which balloon when the cores are busy.
    Neither changes a trained weight or a metric."""
    import psutil
    import torch

    cpu_percent = psutil.cpu_percent
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: cpu_percent(None, percpu))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
