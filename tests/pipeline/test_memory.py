import gc
import os

import pytest

from mp2amp.pipeline.memory import LOAD_GC_THRESHOLD, fewer_collections, release_free_memory


def test_release_free_memory_is_callable_and_returns_nothing() -> None:
    # glibc here: malloc_trim runs; elsewhere a no-op. Either way it must never raise.
    assert release_free_memory() is None
    blobs = [bytes(1200) for _ in range(10_000)]
    del blobs
    assert release_free_memory() is None


def test_fewer_collections_raises_the_young_threshold_for_the_block_and_its_forks() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (LOAD_GC_THRESHOLD, *before[1:])
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the transform worker is forked inside the block: it inherits it
            os.write(write, str(gc.get_threshold()[0]).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        assert int(os.read(read, 32)) == LOAD_GC_THRESHOLD
        os.close(read)
        os.close(write)
    assert gc.get_threshold() == before


def test_fewer_collections_restores_after_an_error_and_never_lowers() -> None:
    before = gc.get_threshold()
    with pytest.raises(KeyError), fewer_collections():
        raise KeyError("boom")
    assert gc.get_threshold() == before
    gc.set_threshold(LOAD_GC_THRESHOLD * 2, *before[1:])
    try:
        with fewer_collections():  # someone asked for rarer collections already
            assert gc.get_threshold()[0] == LOAD_GC_THRESHOLD * 2
    finally:
        gc.set_threshold(*before)


def test_cyclic_garbage_is_still_collected_inside_the_block() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    with fewer_collections(threshold=1_000):
        gc.collect()
        start = gc.get_stats()[0]["collections"]
        for _ in range(5_000):
            Node()  # a cycle each: only the collector frees them
        assert gc.get_stats()[0]["collections"] > start
        # at most the cycles made since the last collection are still there
        assert sum(isinstance(o, Node) for o in gc.get_objects()) <= 1_000
