"""Freed C-heap memory is handed back to the system between stages."""

import pytest
import torch

from ip2n.bench.timing import current_rss_mb
from ip2n.heap import _malloc_trim, release_free_heap


@pytest.mark.skipif(_malloc_trim() is None, reason="malloc_trim is glibc's")
def test_release_free_heap_returns_the_holes_freed_tensors_leave():
    # 64 KB tensors come from the heap (under glibc's initial 128 KB mmap threshold); freeing every
    # other one leaves holes that free() itself never returns.
    blocks = [torch.ones(16 * 1024) for _ in range(3000)]  # 3000 × 64 KB, written so they are resident
    del blocks[::2]
    before = current_rss_mb()
    assert release_free_heap()
    assert before - current_rss_mb() > 50  # of the ~96 MB in holes
