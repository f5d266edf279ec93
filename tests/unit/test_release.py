"""governor.release: a structure let go of a piece at a time is freed, all of it."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field


@dataclass
class Leaf:
    name: str


@dataclass
class Branch:
    leaves: list[Leaf] = field(default_factory=list)
    index: dict[str, Leaf] = field(default_factory=dict)


def tree(width: int) -> tuple[list[Branch], list[weakref.ref[Leaf]]]:
    branches = []
    refs = []
    for b in range(width):
        branch = Branch()
        for i in range(width):
            leaf = Leaf(f"{b}.{i}")
            branch.leaves.append(leaf)
            branch.index[leaf.name] = leaf
            refs.append(weakref.ref(leaf))
        branches.append(branch)
    return branches, refs


def test_everything_held_is_freed_whatever_the_depth() -> None:
    from governor.release import release

    for levels in (0, 1, 2, 5):
        branches, refs = tree(30)
        box: list[object] = [branches]
        del branches
        gc.disable()  # freed by reference counting, not by a collection
        try:
            release(box, levels=levels)
            assert box == []
            assert [r for r in refs if r() is not None] == [], levels
        finally:
            gc.enable()


def test_what_is_referenced_elsewhere_stays() -> None:
    from governor.release import release

    branches, refs = tree(10)
    kept = branches[3].leaves[7]
    box: list[object] = [branches]
    del branches
    release(box, levels=3)
    assert [r() for r in refs if r() is not None] == [kept]
    assert kept.name == "3.7"


def test_classes_and_modules_are_not_walked() -> None:
    from governor.release import release

    # A class and a module as leaves: held and dropped, never descended into (their
    # referents are the whole program), so the walk stays the size of the structure.
    box: list[object] = [[Leaf, gc, Leaf("x")]]
    release(box, levels=10)
    assert box == []
    assert Leaf("y").name == "y"
