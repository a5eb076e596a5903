"""Give freed heap memory back to the operating system during long runs.

Events are ~1 KB each, above CPython's small-object allocator, so millions of them pass
through glibc's malloc; the heap then keeps freed holes and the process's resident size
creeps up with the run although live data stays bounded. ``malloc_trim(0)`` returns those
pages (measured: 250 MB -> 201 MB peak RSS on a 971k-event migration). A no-op where glibc
is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _trimmer() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is None:
        return lambda: None

    def release() -> None:
        trim(0)

    return release


release_free_memory = _trimmer()
