"""One cycle finder for every graph form: ``onnx_ir`` graphs (:func:`surgery.graph.find_cycle`) and
raw protobuf nodes (:func:`surgery.protoload.find_proto_cycle`, which runs before onnx is imported).

Both reduce their graph to ``deps[i]``, the indices of the nodes node ``i`` reads from, and ask
:func:`cycle_among`. Nothing here imports onnx, onnx-ir or numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cycle_among"]


def cycle_among(deps: Sequence[set[int]]) -> list[int] | None:
    """A dependency cycle as node indices (producers first, the first repeated at the end), or None.

    Kahn's algorithm, linear in nodes + edges. Nodes left over once nothing more can be scheduled
    lie on or behind a cycle; walking back through left-over producers finds one. The cycle starts
    at its node that comes first in the graph, so the message naming it is stable.
    """
    users: list[list[int]] = [[] for _ in deps]
    for i, mine in enumerate(deps):
        for j in mine:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if done == len(deps):
        return None
    # every left-over node has a left-over dependency: walk back until a node repeats
    start = next(i for i, w in enumerate(waiting) if w > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    i = start
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = next(j for j in deps[i] if waiting[j] > 0)
    cycle = path[seen[i] :]
    cycle.reverse()  # producers first
    first = cycle.index(min(cycle))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]
