"""A token kernel's workspace: its (N, …) arrays are buffers the caller made once, shared by arrays whose lives
do not overlap.

    t5 = work_[4]          the writer hands out one buffer per array (TokenKernelWriter.buffer) and records its
    …                      shape; `share_buffers` then reads the kernel's straight-line statements and gives an
    t9 = work_[4]          array the buffer of one that is dead (last read on an earlier line) and of its shape

A kernel's statements run top to bottom once (its loops are inside statements), so an array is live from the line
that takes its buffer to the last line naming it; an array the kernel returns lives to the end. Fewer buffers keep
the step's working set in cache (a TransformerBlock step: 13 MB of buffers one per array).
"""
from __future__ import annotations

import re

TAKEN = re.compile(r"^\s*(\w+) = work_\[(\d+)\]")


def share_buffers(lines: list, shapes: list, returned: set) -> tuple:
    """(lines with every `work_[k]` renumbered, the shapes of the buffers left): each array takes the first dead
    buffer of its shape, or a new one."""
    taken = {}  # line index → (array name, its buffer in `shapes`)
    for index, line in enumerate(lines):
        match = TAKEN.match(line)
        if match:
            taken[index] = (match.group(1), int(match.group(2)))
    last = {name: index for index, (name, _) in taken.items()}
    words = re.compile(r"\b(" + "|".join(re.escape(name) for name in last) + r")\b") if last else None
    for index, line in enumerate(lines):
        for name in (words.findall(line.split("#")[0]) if words else ()):  # a comment reads nothing
            last[name] = max(last[name], index)
    for name in returned:
        if name in last:
            last[name] = len(lines)
    kept, free, living, renamed = [], {}, [], list(lines)
    for index in sorted(taken):
        name, buffer = taken[index]
        for other, slot in [(o, s) for o, s in living if last[o] < index]:
            living.remove((other, slot))
            free.setdefault(kept[slot], []).append(slot)
        shape = tuple(shapes[buffer])
        slot = free[shape].pop() if free.get(shape) else None
        if slot is None:
            slot = len(kept)
            kept.append(shape)
        living.append((name, slot))
        renamed[index] = lines[index].replace(f"work_[{buffer}]", f"work_[{slot}]", 1)
    return renamed, kept
