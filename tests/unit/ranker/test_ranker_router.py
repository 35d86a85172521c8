from collections import Counter

import pytest
from pydantic import ValidationError

from ranker.route.router import RoutingConfig, assign_variant


def _cfg(*weights: tuple[str, int], salt: str = "s") -> RoutingConfig:
    return RoutingConfig.model_validate({
        "experiment": "e", "salt": salt, "control": weights[0][0],
        "variants": [{"name": n, "weight": w, "endpoints": []} for n, w in weights],
    })  # fmt: skip


def test_assignment_is_deterministic_and_follows_weights() -> None:
    cfg = _cfg(("control", 50), ("a", 30), ("b", 20))
    first = [assign_variant(cfg, u) for u in range(20_000)]
    assert first == [assign_variant(cfg, u) for u in range(20_000)]
    share = Counter(first)
    assert abs(share["control"] / 20_000 - 0.5) < 0.02
    assert abs(share["a"] / 20_000 - 0.3) < 0.02
    assert abs(share["b"] / 20_000 - 0.2) < 0.02


def test_raising_a_treatment_only_moves_users_into_it() -> None:
    users = range(20_000)
    steps = [(90, 10), (75, 25), (50, 50), (0, 100)]
    prev = None
    for c, t in steps:
        cfg = _cfg(("control", c), ("treatment", t))
        now = {u: assign_variant(cfg, u) for u in users}
        if prev is not None:
            moved = [u for u in users if prev[u] != now[u]]
            assert moved, "a larger weight must move somebody"
            assert all(prev[u] == "control" and now[u] == "treatment" for u in moved)
        prev = now


def test_abn_raise_one_treatment_leaves_the_other_alone() -> None:
    before = _cfg(("control", 80), ("a", 10), ("b", 10))
    after = _cfg(("control", 60), ("a", 30), ("b", 10))
    for u in range(20_000):
        x, y = assign_variant(before, u), assign_variant(after, u)
        assert x == y or (x == "control" and y == "a")


def test_the_salt_reshuffles_users() -> None:
    a = [assign_variant(_cfg(("control", 50), ("t", 50), salt="one"), u) for u in range(2000)]
    b = [assign_variant(_cfg(("control", 50), ("t", 50), salt="two"), u) for u in range(2000)]
    assert 0.35 < sum(x != y for x, y in zip(a, b, strict=True)) / 2000 < 0.65


@pytest.mark.parametrize(
    ("variants", "control", "message"),
    [
        ([("control", 50), ("t", 40)], "control", "sum to 100"),
        ([("control", 50), ("control", 50)], "control", "unique"),
        ([("control", 50), ("t", 50)], "nobody", "names no variant"),
        ([("control", 150), ("t", -50)], "control", "less than or equal to 100"),
    ],
)
def test_bad_configs_are_rejected(
    variants: list[tuple[str, int]], control: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RoutingConfig.model_validate({
            "experiment": "e", "control": control,
            "variants": [{"name": n, "weight": w} for n, w in variants],
        })  # fmt: skip
