import numpy as np
import pandas as pd

from ranker.world.features import (
    ITEM_FEATURES,
    USER_FEATURES,
    extract_item_features,
    extract_user_features,
)
from ranker.world.ground_truth import make_world


def test_extract_user_features() -> None:
    log = make_world(7, 1000, 1000).activity_log(impressions_per_user=30)
    features = extract_user_features(log)
    assert "like_rate" in features.columns
    assert features["like_rate"].between(0, 1).all()
    assert not features.isna().any().any()
    for col in ("total_interactions", "age", "click_rate"):
        assert col in features.columns
    assert list(features.columns) == list(USER_FEATURES)
    assert len(features) == 1000


def test_small_hand_made_log_with_aliases_and_gaps() -> None:
    log = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3],
            "item_id": [10, 10, 11, 10, 12],
            "action": ["view", "like", "view", "click", "view"],
            "age": [25, 25, 25, np.nan, 40],
        }
    )
    f = extract_user_features(log)
    assert not f.isna().any().any()
    assert f.loc[1, "like_rate"] == 0.5
    assert f.loc[1, "total_interactions"] == 1
    assert f.loc[2, "like_rate"] == 0.0 and f.loc[2, "click_rate"] == 1.0
    assert f.loc[3, "total_interactions"] == 0 and f.loc[3, "age"] == 40


def test_item_features_are_finite_and_one_hot() -> None:
    w = make_world(7, 500, 800)
    f = extract_item_features(w.items, w.activity_log(20))
    assert list(f.columns) == list(ITEM_FEATURES)
    assert np.isfinite(f.to_numpy()).all()
    one_hot = f[[c for c in f.columns if c.startswith("is_")]].sum(axis=1)
    assert (one_hot == 1).all()
