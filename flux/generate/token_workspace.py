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


def share_buffers(lines: list, shapes: list, returned: set, inherited: dict | None = None,
                  spare: list = ()) -> tuple:
    """(lines with every `work_[k]` renumbered, the buffers left): each array takes a dead buffer of its shape, the
    last freed first (still in cache), or a new one. A buffer left is its shape (a new array), or the label of a
    buffer the kernel borrows from another: `inherited` {argument name: (shape, label)} live until their last
    read here (the forward's kept arrays, in backward), `spare` [(shape, label)] free from the start."""
    taken = {}  # line index → (array name, its buffer in `shapes`)
    for index, line in enumerate(lines):
        match = TAKEN.match(line)
        if match:
            taken[index] = (match.group(1), int(match.group(2)))
    inherited = inherited or {}
    last = {name: index for index, (name, _) in taken.items()} | {name: -1 for name in inherited}
    words = re.compile(r"\b(" + "|".join(re.escape(name) for name in last) + r")\b") if last else None
    for index, line in enumerate(lines):
        for name in (words.findall(line.split("#")[0]) if words else ()):  # a comment reads nothing
            last[name] = max(last[name], index)
    for name in returned:
        if name in last:
            last[name] = len(lines)
    kept, free, living, renamed = [], {}, [], list(lines)
    for shape, label in spare:
        free.setdefault(tuple(shape), []).append(len(kept))
        kept.append(label)
    for name, (shape, label) in inherited.items():
        living.append((name, len(kept), tuple(shape)))
        kept.append(label)
    for index in sorted(taken):
        name, buffer = taken[index]
        for entry in [e for e in living if last[e[0]] < index]:
            living.remove(entry)
            free.setdefault(entry[2], []).append(entry[1])
        shape = tuple(shapes[buffer])
        slot = free[shape].pop() if free.get(shape) else None
        if slot is None:
            slot = len(kept)
            kept.append(shape)
        living.append((name, slot, shape))
        renamed[index] = lines[index].replace(f"work_[{buffer}]", f"work_[{slot}]", 1)
    return renamed, kept


def buffers_of(lines: list, names: list) -> list:
    """The workspace buffer holding each of `names` (None: not a buffer) in a kernel's renumbered lines."""
    slots = {m.group(1): int(m.group(2)) for m in map(TAKEN.match, lines) if m}
    return [slots.get(name) for name in names]
