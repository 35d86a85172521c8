"""The catalog index: the exact scan is what the engine always did; the IVF index is
calibrated to a recall target and meets it on queries it was not calibrated on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ranker.model.artifacts import load_snapshot
from ranker.model.catalog_index import ExactIndex, IVFIndex, build_index, exact_top_k, recall_at_k
from ranker.model.engine import RankingEngine
from ranker.model.towers import load_towers


def clustered(n: int, nq: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], ...]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, 32)).astype(np.float32)
    items = centers[rng.integers(0, 64, n)] + 0.3 * rng.standard_normal((n, 32))
    users = centers[rng.integers(0, 64, nq)] + 0.3 * rng.standard_normal((nq, 32))
    return items.astype(np.float32), users.astype(np.float32)


def test_exact_top_k_is_the_full_stable_sort() -> None:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((5000, 16)).astype(np.float32)
    emb[100] = emb[7]  # a tie: the lower row comes first, as a stable sort has it
    for q in rng.standard_normal((20, 16)).astype(np.float32):
        rows, logits = exact_top_k(emb, q, 50)
        full = emb @ q
        expected = np.argsort(-full, kind="stable")[:50]
        assert rows.tolist() == expected.tolist()
        assert np.array_equal(logits, full[expected])
    q = emb[7]
    rows, _ = exact_top_k(emb, q, 5000)
    assert rows.tolist().index(7) < rows.tolist().index(100)


def test_ivf_reaches_its_recall_target_on_queries_it_was_not_calibrated_on() -> None:
    items, users = clustered(60_000, 400)
    index = IVFIndex(items, nlist=256)
    calibration = index.calibrate(users[:100], 50, target=0.97)
    assert calibration.recall >= 0.97 and calibration.nprobe < index.nlist
    assert list(calibration.tried) == sorted(calibration.tried)  # powers of two, upwards
    recalls = []
    for q in users[100:]:
        rows, scores = index.search(q, 50)
        truth, _ = exact_top_k(items, q, 50)
        recalls.append(recall_at_k(rows, truth))
        assert np.all(np.diff(scores) <= 1e-5), "best first"
        assert np.allclose(scores, items[rows] @ q, rtol=1e-4, atol=1e-4), "exact scores"
    assert float(np.mean(recalls)) >= 0.95


def test_auto_is_exact_below_the_threshold_and_ivf_above() -> None:
    items, users = clustered(3000, 20)
    assert build_index(items, "auto", threshold=5000).kind == "exact"
    index = build_index(items, "auto", threshold=1000, calibration_queries=users)
    assert isinstance(index, IVFIndex) and index.calibration.tried
    assert isinstance(build_index(items, "exact", threshold=10), ExactIndex)


@pytest.fixture(scope="module")
def snapshot_and_towers(model_dirs: dict[str, Path]) -> tuple[object, object]:
    snapshot = load_snapshot(str(model_dirs["v2"]))
    return snapshot, load_towers(snapshot, "onnx", 1)


def test_the_model_catalog_keeps_the_exact_top_k(
    snapshot_and_towers: tuple[object, object],
) -> None:
    snapshot, towers = snapshot_and_towers
    engine = RankingEngine(snapshot, towers)  # type: ignore[arg-type]
    assert engine.index.kind == "exact", "10k items: below the threshold"
    item_emb = towers.item(snapshot.item_x)  # type: ignore[attr-defined]
    for user in range(0, 2000, 40):
        if not engine.knows(user):
            continue
        ranking = engine.rank(user, 50)
        emb = towers.user(snapshot.user_x[[engine._user_row[user]]])[0]  # type: ignore[attr-defined]
        expected = np.argsort(-(item_emb @ emb), kind="stable")[:50]
        assert ranking.rows.tolist() == expected.tolist()


def test_the_model_catalog_through_ivf_keeps_its_recall(
    snapshot_and_towers: tuple[object, object],
) -> None:
    snapshot, towers = snapshot_and_towers
    exact = RankingEngine(snapshot, towers, index="exact")  # type: ignore[arg-type]
    ivf = RankingEngine(snapshot, towers, index="ivf")  # type: ignore[arg-type]
    assert ivf.index.kind == "ivf"
    users = [u for u in range(5000, 7000, 10) if exact.knows(u)]
    recall = np.mean([recall_at_k(ivf.rank(u, 50).rows, exact.rank(u, 50).rows) for u in users])
    assert recall >= 0.95, recall


def test_exact_top_k_with_many_ties_is_the_full_stable_sort() -> None:
    """Scores with many equal values, at and around the k-th: the rows tied with the
    k-th largest are cut by row, as a full stable sort cuts them."""
    rng = np.random.default_rng(5)
    emb = (np.round(rng.standard_normal((4000, 8)) * 2) / 2).astype(np.float32)
    for q in (np.round(rng.standard_normal((30, 8)) * 2) / 2).astype(np.float32):
        full = emb @ q
        for k in (1, 7, 50, 120):
            rows, logits = exact_top_k(emb, q, k)
            expected = np.argsort(-full, kind="stable")[:k]
            assert rows.tolist() == expected.tolist()
            assert np.array_equal(logits, full[expected])
