"""Memory freed by large downloads goes back to the operating system.

glibc serves a block of at least its mmap threshold (128 KiB) with a mapping of its own,
returned to the system when freed; but by default it raises that threshold to the size
of each such block freed (up to 32 MiB). After the first recording a process has freed,
recordings (up to 8 MB each) come from the heap, which keeps what is freed: 48 stalled
readers of a ZIP of eight 1 MB messages left ``serve`` at 143 MiB once
``KAZOO_VM_SEND_TIMEOUT`` had cut them off (60 MiB before they came, 174 MiB while
they stalled); with the threshold fixed, 69 MiB. Other C libraries: nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold (a fixed threshold is never raised); False when the
    C library has no ``mallopt``."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
