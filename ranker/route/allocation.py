"""Which variant owns each routing bucket: a stored allocation that moves only the users
a weight change must move.

A user's routing bucket is ``routing_bucket(salt, user_id)`` in [0, 10000); each variant
owns ``weight x 100`` buckets. Deriving the owners from the weights alone (contiguous
ranges in a fixed order) cannot keep every unchanged variant's users in A/B/n: shifting
one range boundary shifts the ranges after it. So the allocation is *stored* (in the
routing ConfigMap, next to the weights) and each change is computed from the previous
one by :func:`reallocate`:

* a variant whose weight shrank releases exactly the buckets it loses (its highest ones);
* a removed variant releases all of its buckets;
* a variant whose weight grew takes exactly the buckets it gains, lowest free first;
* every other variant keeps exactly its buckets.

So users leave only variants that shrank, enter only variants that grew, and the number
of buckets that change owner is the weight moved x 100, for any sequence of changes and
any number of variants. The result is deterministic, so a router restart (or another
replica) reading the same allocation routes every user the same way.

An allocation is ``{variant: [[lo, hi), ...]]}``: sorted, merged, half-open ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ranker.protocol.hashing import N_ROUTING_BUCKETS

BUCKETS_PER_PERCENT = N_ROUTING_BUCKETS // 100

Range = tuple[int, int]
Allocation = dict[str, list[Range]]


class AllocationError(ValueError):
    """An allocation that does not partition the buckets as the weights say."""


def merge(ranges: Iterable[Sequence[int]]) -> list[Range]:
    """Sorted half-open ranges with touching or overlapping ones merged."""
    out: list[Range] = []
    for lo, hi in sorted((int(r[0]), int(r[1])) for r in ranges if r[1] > r[0]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def size(ranges: Iterable[Range]) -> int:
    return sum(hi - lo for lo, hi in ranges)


def layout(order: Sequence[str], weights: Mapping[str, int]) -> Allocation:
    """The allocation without history: contiguous ranges in ``order`` (control first)."""
    out: Allocation = {}
    lo = 0
    for name in order:
        hi = lo + int(weights[name]) * BUCKETS_PER_PERCENT
        out[name] = [(lo, hi)] if hi > lo else []
        lo = hi
    return out


def validate(allocation: Mapping[str, Sequence[Sequence[int]]], weights: Mapping[str, int]) -> None:
    """Raise :class:`AllocationError` unless ``allocation`` partitions [0, 10000) into the
    variants of ``weights`` with ``weight x 100`` buckets each."""
    if set(allocation) != set(weights):
        raise AllocationError(
            f"buckets are given for {sorted(allocation)} but the weights name {sorted(weights)}"
        )
    seen: list[Range] = []
    for name, ranges in allocation.items():
        for r in ranges:
            if len(r) != 2 or not 0 <= r[0] < r[1] <= N_ROUTING_BUCKETS:
                raise AllocationError(
                    f"variant {name}: bucket range {list(r)} is not [lo, hi) "
                    f"with 0 <= lo < hi <= {N_ROUTING_BUCKETS}"
                )
        owned = size((int(r[0]), int(r[1])) for r in ranges)
        want = int(weights[name]) * BUCKETS_PER_PERCENT
        if owned != want:
            raise AllocationError(
                f"variant {name} owns {owned} buckets but its weight {weights[name]} needs {want}"
            )
        seen.extend((int(r[0]), int(r[1])) for r in ranges)
    seen.sort()
    position = 0
    for lo, hi in seen:
        if lo != position:
            what = "overlap" if lo < position else "leave a gap"
            raise AllocationError(f"bucket ranges {what} at bucket {min(lo, position)}")
        position = hi
    if position != N_ROUTING_BUCKETS:
        raise AllocationError(f"bucket ranges leave a gap at bucket {position}")


def _take_highest(ranges: list[Range], count: int) -> tuple[list[Range], list[Range]]:
    """Split off the ``count`` highest buckets: (kept, released)."""
    kept = list(ranges)
    released: list[Range] = []
    while count > 0:
        lo, hi = kept.pop()
        n = min(count, hi - lo)
        released.append((hi - n, hi))
        if hi - n > lo:
            kept.append((lo, hi - n))
        count -= n
    return kept, released


def _take_lowest(free: list[Range], count: int) -> tuple[list[Range], list[Range]]:
    """Split off the ``count`` lowest free buckets: (taken, still free)."""
    rest = list(free)
    taken: list[Range] = []
    while count > 0:
        lo, hi = rest.pop(0)
        n = min(count, hi - lo)
        taken.append((lo, lo + n))
        if lo + n < hi:
            rest.insert(0, (lo + n, hi))
        count -= n
    return taken, rest


def reallocate(
    previous: Mapping[str, Sequence[Sequence[int]]] | None,
    order: Sequence[str],
    weights: Mapping[str, int],
) -> Allocation:
    """The allocation for ``weights`` that moves the fewest users from ``previous``.

    ``order`` lists the variants (control first); it decides the layout when there is no
    usable previous allocation and which grower takes the lowest free buckets first.
    A ``previous`` that is not a partition of the buckets is ignored (fresh layout).
    """
    if sum(int(weights[n]) for n in order) != 100 or set(order) != set(weights):
        raise AllocationError("weights must name every variant once and sum to 100")
    if previous is None or not _is_partition(previous):
        return layout(order, weights)
    current: Allocation = {name: merge(previous.get(name, [])) for name in order}
    free: list[Range] = []
    for name, ranges in previous.items():
        if name not in weights:
            free.extend((int(r[0]), int(r[1])) for r in ranges)
    for name in order:
        surplus = size(current[name]) - int(weights[name]) * BUCKETS_PER_PERCENT
        if surplus > 0:
            current[name], released = _take_highest(current[name], surplus)
            free.extend(released)
    free = merge(free)
    for name in order:
        deficit = int(weights[name]) * BUCKETS_PER_PERCENT - size(current[name])
        if deficit > 0:
            taken, free = _take_lowest(free, deficit)
            current[name] = merge([*current[name], *taken])
    return current


def _is_partition(allocation: Mapping[str, Sequence[Sequence[int]]]) -> bool:
    ranges = sorted((int(r[0]), int(r[1])) for rs in allocation.values() for r in rs if len(r) == 2)
    position = 0
    for lo, hi in ranges:
        if lo != position or hi <= lo:
            return False
        position = hi
    return position == N_ROUTING_BUCKETS


def owners(allocation: Mapping[str, Sequence[Sequence[int]]], order: Sequence[str]) -> bytearray:
    """A lookup table: ``table[bucket]`` is the index in ``order`` of the bucket's owner."""
    index = {name: i for i, name in enumerate(order)}
    table = bytearray(N_ROUTING_BUCKETS)
    for name, ranges in allocation.items():
        i = index[name]
        for lo, hi in ranges:
            table[int(lo) : int(hi)] = bytes([i]) * (int(hi) - int(lo))
    return table
