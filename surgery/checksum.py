"""A cheap checksum of a large buffer: its length and evenly spread blocks of it, read in place.

Used where a weight may have been edited in place without changing identity (the runner's
fingerprints, the worker's spill files): reading ``SAMPLED_BLOCKS × BLOCK`` bytes per tensor never
serializes weights wholesale. Buffers up to that size are hashed whole. An edit that touches none
of the sampled blocks (a few scattered elements of a large tensor) is not seen.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["BLOCK", "SAMPLED_BLOCKS", "sampled_digest"]

SAMPLED_BLOCKS = 1024
BLOCK = 64


def sampled_digest(array: Any) -> bytes | None:
    """The checksum of a C-contiguous numpy array's bytes (None for anything else)."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or array.dtype.hasobject:
        return None
    flat = array.reshape(-1).view(np.uint8)
    size = flat.size
    if size <= SAMPLED_BLOCKS * BLOCK:
        return hashlib.blake2b(flat.tobytes(), digest_size=8).digest()
    starts = np.linspace(0, size - BLOCK, SAMPLED_BLOCKS).astype(np.int64)
    picked = flat[(starts[:, None] + np.arange(BLOCK)[None, :]).reshape(-1)]
    return size.to_bytes(8, "little") + hashlib.blake2b(picked.tobytes(), digest_size=8).digest()
