import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from ranker.model.artifacts import load_snapshot
from ranker.model.engine import RankingEngine
from ranker.model.network import load_model_dir
from ranker.model.towers import load_towers
from ranker.model.towers_torch import TorchTowers
from ranker.serve.metrics import SCORE_BUCKETS, BulkHistogram


@pytest.fixture(scope="module")
def loaded(model_dirs):  # type: ignore[no-untyped-def]
    return load_model_dir(str(model_dirs["v2"]))


def test_fast_path_ranks_exactly_like_the_naive_full_model(loaded) -> None:  # type: ignore[no-untyped-def]
    towers = TorchTowers(loaded.model)
    fast, naive = RankingEngine(loaded, towers, "fast"), RankingEngine(loaded, towers, "naive")
    for user in (0, 1, 42, 9_999):
        a, b = fast.rank(user, 50), naive.rank(user, 50)
        assert np.array_equal(a.rows, b.rows)
        assert np.allclose(a.scores, b.scores, atol=1e-5)


def test_user_embedding_cache_is_bounded_lru(loaded) -> None:  # type: ignore[no-untyped-def]
    eng = RankingEngine(loaded, TorchTowers(loaded.model), "fast", cache_size=2)
    assert eng.rank(1, 5).cache_hit is False
    assert eng.rank(1, 5).cache_hit is True
    eng.rank(2, 5)
    eng.rank(3, 5)  # evicts user 1, the least recently used
    assert eng.rank(3, 5).cache_hit is True
    assert eng.rank(1, 5).cache_hit is False


def test_file_uri_and_path_load_the_same_model(model_dirs) -> None:  # type: ignore[no-untyped-def]
    a = load_model_dir(str(model_dirs["v1"]))
    b = load_model_dir(model_dirs["v1"].resolve().as_uri())
    assert a.version == b.version == "v1"


def test_bulk_histogram_matches_prometheus_client_histogram() -> None:
    reg = CollectorRegistry()
    bulk = BulkHistogram("bulk_score", "x", ["variant"], SCORE_BUCKETS, reg).child("a")
    ref = Histogram("ref_score", "x", ["variant"], buckets=SCORE_BUCKETS, registry=reg)
    values = np.concatenate([np.random.default_rng(0).random(500), [0.05, 0.1, 1.0, 0.0]])
    bulk.observe_many(values)
    for v in values:
        ref.labels("a").observe(float(v))
    for le in ("0.05", "0.1", "0.5", "1.0", "+Inf"):
        got = reg.get_sample_value("bulk_score_bucket", {"variant": "a", "le": le})
        want = reg.get_sample_value("ref_score_bucket", {"variant": "a", "le": le})
        assert got == want, le
    assert reg.get_sample_value("bulk_score_sum", {"variant": "a"}) == pytest.approx(values.sum())


@pytest.mark.parametrize("profile", ["v1", "v2"])
def test_onnx_backend_ranks_exactly_like_torch(model_dirs, profile) -> None:  # type: ignore[no-untyped-def]
    """The serving image scores with onnxruntime: the same top-k as torch."""
    snapshot = load_snapshot(str(model_dirs[profile]))
    onnx = RankingEngine(snapshot, load_towers(snapshot, "onnx"), "fast")
    torch_ = RankingEngine(snapshot, load_towers(snapshot, "torch"), "fast")
    assert onnx.towers.backend == "onnx" and torch_.towers.backend == "torch"
    assert load_towers(snapshot, "auto").backend == "onnx"
    for user in (0, 1, 42, 777, 9_999):
        a, b = onnx.rank(user, 50), torch_.rank(user, 50)
        assert np.array_equal(a.rows, b.rows)
        assert np.allclose(a.scores, b.scores, atol=1e-5)
