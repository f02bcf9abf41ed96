"""The API server process's own set-up (server/api.py): how several worker processes share the cores."""

from __future__ import annotations

import os

import pytest

from server import api


@pytest.mark.parametrize(("cores", "workers", "threads"), [(8, 2, "4"), (2, 2, "1"), (2, 4, "1"), (6, 4, "1")])
def test_each_worker_process_gets_its_share_of_the_cores(monkeypatch, cores, workers, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    api._share_cores(workers)
    assert os.environ["OMP_NUM_THREADS"] == threads


def test_a_thread_count_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    api._share_cores(2)
    assert os.environ["OMP_NUM_THREADS"] == "3"
