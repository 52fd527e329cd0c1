"""A CPU run keeps the memory it frees (``runtime/host_memory.py``): a freed block stays resident, and the next
block that fits in it is served from it without page faults.

Each check runs in its own interpreter: ``keep_freed_memory`` changes the allocator of the whole process.  The
reference is glibc's default in the same script: there a 64 MB block (above glibc's largest mmap threshold, 32
MB) is unmapped when freed, and a 48 MB block after it is a fresh mapping whose every page faults in.
"""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

SCRIPT = """
import resource, sys
import torch
from egg.zoo.discriminative_captioner.runtime.host_memory import keep_freed_memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def resident_pages():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1])

if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # a second call changes nothing
before = resident_pages()
activation = torch.ones(16_000_000)  # a step's activation: 64 MB, written, freed
del activation
kept = resident_pages() - before
before = faults()
activation = torch.ones(12_000_000)  # the next step's: 48 MB
print(kept, faults() - before)
"""

PAGES_64MB, PAGES_48MB = 16_000_000 * 4 // 4096, 12_000_000 * 4 // 4096


def run(mode):
    """Pages still resident after the 64 MB block is freed, and page faults of writing the 48 MB one."""
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    kept, faults = result.stdout.split()[-2:]
    return int(kept), int(faults)


def test_glibc_default_returns_a_freed_block_and_faults_the_next_one_in():
    kept, faults = run("default")
    assert kept < PAGES_64MB * 0.1
    assert faults >= PAGES_48MB * 0.9


def test_kept_memory_stays_resident_and_serves_the_next_block_without_page_faults():
    kept, faults = run("keep")
    assert kept >= PAGES_64MB * 0.9
    assert faults < PAGES_48MB * 0.05
