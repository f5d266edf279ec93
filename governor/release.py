"""Letting go of a large structure a piece at a time, so that no one step holds the GIL long.

Freeing the last reference to a tree of objects frees the whole tree at once, in C,
without a pause: the interpreter lock is not handed over until the last object is gone.
For a 20,000-tenant config that is 12 to 30 ms (the config, its YAML node tree) during
which the event loop's thread cannot run, whichever thread drops the reference.

:func:`release` takes the only remaining reference to such a tree and frees it level by
level: it first holds every object down to a depth, then drops them shallowest first.
Each drop frees one object whose children are still held, or (at the last level) one
small subtree, and the interpreter may switch threads between drops. Run it in a worker
thread; it costs time proportional to the objects it holds.
"""

from __future__ import annotations

import gc
import types
from typing import Final

# Never descended into: shared by everything, and alive whatever is released.
_OPAQUE: Final = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def release(box: list[object], *, levels: int) -> None:
    """Free what ``box`` holds (the caller's only reference, moved into the list).

    ``levels``: how deep to hold before dropping; the subtrees below it go whole.
    """
    held: list[list[object]] = [box[:]]
    box.clear()
    for _ in range(levels):
        deeper: list[object] = []
        for obj in held[-1]:
            if not isinstance(obj, _OPAQUE):
                deeper.extend(gc.get_referents(obj))
        held.append(deeper)
    for level in held:
        while level:
            level.pop()
