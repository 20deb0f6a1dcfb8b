"""chatd.service.settle_heap: start-up objects frozen, young collections spaced out."""

from __future__ import annotations

import gc

from chatd.service import GC_YOUNG, settle_heap


def test_settle_heap_freezes_and_spaces_young_collections():
    """After settle_heap() what was alive is frozen (out of every collection) and the
    youngest generation is collected every GC_YOUNG allocations; the older
    generations keep their thresholds."""
    before = gc.get_threshold()
    # CPython's default youngest threshold, whatever an earlier test's service left set
    gc.set_threshold(700, before[1], before[2])
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG, before[1], before[2])
        assert GC_YOUNG > 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
