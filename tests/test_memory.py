"""server.memory: the free heap that glibc keeps after other threads free their memory goes back to the OS."""

from __future__ import annotations

import sys
import threading

import psutil
import pytest

from server.memory import return_free_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")


def test_memory_freed_by_another_thread_goes_back_to_the_os_after_the_trim():
    kept: list[bytearray] = []

    def allocate_and_mostly_free() -> None:
        # 64 KB blocks come from this thread's glibc arena (below the mmap threshold); keeping every
        # tenth pins the arena's top, so glibc's own trimming at free() cannot give the rest back.
        blocks = [bytearray(b"x" * (64 * 1024)) for _ in range(4000)]
        kept.extend(blocks[::10])
        del blocks

    worker = threading.Thread(target=allocate_and_mostly_free)
    worker.start()
    worker.join()
    process = psutil.Process()
    before = process.memory_info().rss
    assert return_free_heap() is True
    released = before - process.memory_info().rss
    assert released > 100 * 2**20, f"only {released / 2**20:.0f} MiB of ~225 MiB freed came back"
    assert len(kept) == 400
