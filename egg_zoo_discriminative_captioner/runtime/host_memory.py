"""A CPU run keeps the memory it frees, instead of handing it back to the kernel and faulting it in again.

A training step allocates and frees the same activations every step.  glibc's ``malloc`` serves every block
over its mmap threshold (at most 32 MB: a GPT-2-small MLP activation at batch 100 is 61 MB) with its own
``mmap`` and unmaps it when freed, and returns the freed top of its heap to the kernel: the next step touches
fresh pages again, each a page fault (measured: 0.8 us per 4 KiB page where the kernel has it at hand, 12 us
in a virtual machine whose host takes the guest's freed memory back).  Measured on such a machine
(GPT-2 small at batch 100, one thread): 0.9 M page faults per step, and the scoring forward took 12.3 s with
glibc's defaults and 7.7 s with its memory kept.  ``keep_freed_memory`` sets glibc's ``mallopt`` so that freed
memory stays in the process for the next allocation that fits in it; the process's resident size then stays
at its peak, which a training step reaches anyway every step, and does not grow across steps (the step
benchmark's growth check: +0.1 MiB over steps 5..40).  On the GPU the activations live in PyTorch's caching allocator,
which keeps its memory already; PyTorch offers no caching allocator for CPU tensors, so this is set here, by hand.
"""

import ctypes
import ctypes.util
import functools
import platform

# glibc's <malloc.h>: mallopt's parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = -1  # mallopt takes an int; glibc reads the threshold as a size_t, where -1 is the largest one


@functools.cache
def keep_freed_memory():
    """Makes glibc's ``malloc`` keep freed memory in the process (no ``mmap`` blocks, no heap trimming): for
    CPU training.  Returns whether it could (False off glibc, e.g. macOS or musl, where nothing changes).
    Applies to the whole process from the call on; calling it again does nothing."""
    if platform.libc_ver()[0] != "glibc":  # mallopt's parameter numbers above are glibc's
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
