import numpy as np
import pandas as pd

from ranker.world.ground_truth import CATEGORIES, make_world


def test_world_has_the_required_size_and_shape() -> None:
    w = make_world(7)
    assert w.n_users == 10_000 and w.n_items == 10_000
    assert len(CATEGORIES) >= 8
    assert set(w.items["category"]) == set(CATEGORIES)
    assert (w.items["age_hours"] >= 0).all() and (w.items["popularity"] > 0).all()


def test_world_and_log_are_deterministic_by_seed() -> None:
    a, b, c = make_world(3, 500, 400), make_world(3, 500, 400), make_world(4, 500, 400)
    assert np.array_equal(a.user_interest, b.user_interest)
    assert not np.array_equal(a.user_interest, c.user_interest)
    pd.testing.assert_frame_equal(a.activity_log(20), b.activity_log(20))


def test_true_probabilities_reward_better_rankings() -> None:
    w = make_world(7)
    rng = np.random.default_rng(0)
    users = rng.integers(0, w.n_users, 200)
    items = np.arange(w.n_items)
    p = w.click_prob(users[:, None], items[None, :])
    assert ((p > 0) & (p < 1)).all()
    oracle = np.sort(p, axis=1)[:, -10:].mean()
    random = p.mean()
    popular = p[:, np.argsort(-w.item_popularity)[:10]].mean()
    assert oracle > popular > random


def test_activity_log_events_follow_the_click_model() -> None:
    w = make_world(7, 2000, 2000)
    log = w.activity_log(impressions_per_user=50)
    assert set(log["event"]) == {"impression", "click", "like", "dwell", "follow"}
    imps = log[log["event"] == "impression"]
    expected = w.click_prob(imps["user_id"], imps["item_id"]).sum()
    clicks = (log["event"] == "click").sum()
    # a Poisson-binomial count: well within 5 standard deviations of its mean
    assert abs(clicks - expected) < 5 * np.sqrt(expected)
    assert (log.loc[log["event"] == "dwell", "dwell_seconds"] > 0).all()
