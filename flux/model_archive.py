"""A model file's zip archive checked before anything in it is inflated or parsed: what each member declares it holds.

A `.npz` is a zip archive, and every size in it is written by whoever made the file. `check_archive` reads only the
archive's directory and each array's header, and refuses (ValueError naming the member):

- a name used by two members: readers disagree about which one counts (Python's zipfile takes the last, others the
  first), so one file could show one set of weights to a reviewer's tool and load another;
- compressed members that inflate more than `MAX_INFLATION` times their stored size beyond `INFLATION_FLOOR` bytes
  in all: a zip bomb (a 4 MB member of zeros inflates to 4 GB). `flux.save` stores members uncompressed, and float
  weights deflate to about 90 % of their size, so only a crafted or re-compressed file of near-constant arrays
  comes near the limit;
- an array whose header declares more data than its member holds (shape 10¹² × 3 over 24 bytes), before NumPy
  allocates what it declares.
"""
from __future__ import annotations

import os
import zipfile
from collections import Counter

import numpy as np

MAX_INFLATION = 100  # uncompressed ÷ compressed bytes of the compressed members, in all
INFLATION_FLOOR = 1 << 24  # 16 MiB: below this, any ratio (a small zero array deflates 1000-fold)


class UnsafeArchive(ValueError):
    """An archive refused unread: a repeated member name or a zip bomb."""


def check_archive(path: str | os.PathLike) -> None:
    """ValueError when the archive at `path` repeats a member's name, would inflate like a zip bomb, or holds an
    array whose header declares more data than its member (see the module docstring)."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        repeated = [name for name, count in Counter(info.filename for info in infos).items() if count > 1]
        if repeated:
            raise UnsafeArchive(f"it holds {len(infos)} members, two of them named {repeated[0]!r}")
        compressed = [info for info in infos if info.compress_type != zipfile.ZIP_STORED]
        inflated, stored = sum(i.file_size for i in compressed), sum(i.compress_size for i in compressed)
        if inflated > max(INFLATION_FLOOR, MAX_INFLATION * stored):
            worst = max(compressed, key=lambda i: i.file_size / max(i.compress_size, 1))
            raise UnsafeArchive(f"its compressed members would inflate from {stored} to {inflated} bytes (more than "
                             f"{MAX_INFLATION}×; {worst.filename} from {worst.compress_size} to {worst.file_size}): "
                             "refused unread as a zip bomb (flux.save stores members uncompressed)")
        for info in infos:
            check_declared_size(archive, info)


def check_declared_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The member's .npy header declares no more data than the member holds."""
    with archive.open(info) as member:
        if not info.filename.endswith(".npy") or member.read(6) != b"\x93NUMPY":
            return
        version = tuple(member.read(2))
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
        declared = member.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if declared > info.file_size:
            raise ValueError(f"{info.filename} declares shape {shape} {dtype} ({declared} bytes) but holds "
                             f"{info.file_size} bytes")
