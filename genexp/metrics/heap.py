"""Keep an evaluation's memory flat on glibc: a fixed mmap threshold.

glibc raises its mmap threshold each time a large block is freed, so the extractor's per-batch
temporaries (megabytes) move onto the heap, and the small feature blocks KID and precision/recall
keep pin them there: peak RSS grew by 200-300 MiB over 20k samples, and by a different amount on
every run. A fixed threshold sends large temporaries back to the OS when freed
(scripts/bench_metrics.py measures both). Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 1 << 16


def fix_mmap_threshold() -> bool:
    """True when glibc took the setting."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
