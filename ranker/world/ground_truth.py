"""A synthetic feed world with ground truth.

Users have latent interests over item categories and a personal click
propensity; items have a category, an age in hours, a latent quality and a
popularity that follows from that quality. The probability that a user clicks,
likes or dwells on an item is a closed-form function of those latents, so a
model that ranks better measurably earns a higher click-through rate, and the
simulator can draw outcomes with the true probabilities.

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import pandas as pd

CATEGORIES: tuple[str, ...] = (
    "news",
    "sports",
    "music",
    "movies",
    "gaming",
    "tech",
    "food",
    "travel",
    "fashion",
    "science",
    "comedy",
    "pets",
)
N_CATEGORIES = len(CATEGORIES)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Ground-truth click model (logit scale). Chosen so that a random feed earns a
# click-through rate of about 2 %, the ten most popular items about 4.5 % and
# the ten best items for each user (an oracle) about 24 %.
_BASE_LOGIT = -3.8
_W_AFFINITY = 1.1
_W_QUALITY = 0.7
_W_FRESHNESS = 0.5  # per 72 hours of age
_LIKE_BASE_LOGIT = -1.2  # P(like | click) on the logit scale, plus quality
_DWELL_MEAN_S = 18.0


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


@dataclass(frozen=True)
class World:
    """Users, items and the true engagement model."""

    seed: int
    n_users: int
    n_items: int
    user_age: IntArray  # years
    user_interest: FloatArray  # (n_users, N_CATEGORIES), rows sum to N_CATEGORIES
    user_propensity: FloatArray  # (n_users,) logit offset
    item_category: IntArray  # (n_items,) index into CATEGORIES
    item_age_hours: FloatArray
    item_quality: FloatArray
    item_popularity: FloatArray  # expected views per day, > 0

    @cached_property
    def users(self) -> pd.DataFrame:
        return pd.DataFrame({"user_id": np.arange(self.n_users), "age": self.user_age})

    @cached_property
    def items(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "item_id": np.arange(self.n_items),
                "category": [CATEGORIES[c] for c in self.item_category],
                "category_idx": self.item_category,
                "age_hours": self.item_age_hours,
                "popularity": self.item_popularity,
            }
        )

    def click_logit(self, user_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> FloatArray:
        """True click logit for aligned arrays (or broadcastable) of users and items."""
        u = np.asarray(user_ids, dtype=np.int64)
        i = np.asarray(item_ids, dtype=np.int64)
        affinity = self.user_interest[u, self.item_category[i]]
        logit: FloatArray = (
            _BASE_LOGIT
            + self.user_propensity[u]
            + _W_AFFINITY * np.log(affinity + 0.15)
            + _W_QUALITY * self.item_quality[i]
            - _W_FRESHNESS * self.item_age_hours[i] / 72.0
        )
        return logit

    def click_prob(self, user_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> FloatArray:
        return _sigmoid(self.click_logit(user_ids, item_ids))

    def like_prob_given_click(self, item_ids: npt.ArrayLike) -> FloatArray:
        i = np.asarray(item_ids, dtype=np.int64)
        return _sigmoid(_LIKE_BASE_LOGIT + self.item_quality[i])

    def dwell_mean_seconds(self, user_ids: npt.ArrayLike, item_ids: npt.ArrayLike) -> FloatArray:
        u = np.asarray(user_ids, dtype=np.int64)
        i = np.asarray(item_ids, dtype=np.int64)
        affinity = self.user_interest[u, self.item_category[i]]
        mean: FloatArray = (
            _DWELL_MEAN_S * (1.0 + 0.25 * affinity) * np.exp(0.3 * self.item_quality[i])
        )
        return mean

    def sample_engagement(
        self,
        user_ids: npt.ArrayLike,
        item_ids: npt.ArrayLike,
        rng: np.random.Generator,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], FloatArray]:
        """Draw (clicked, liked, dwell_seconds) with the true probabilities.

        A like and a dwell only happen after a click; dwell is 0 without one.
        """
        p = self.click_prob(user_ids, item_ids)
        clicked = rng.random(p.shape) < p
        liked = clicked & (rng.random(p.shape) < self.like_prob_given_click(item_ids))
        dwell = np.where(clicked, rng.exponential(self.dwell_mean_seconds(user_ids, item_ids)), 0.0)
        return clicked, liked, dwell

    def activity_log(
        self, impressions_per_user: int = 60, days: float = 14.0, seed: int | None = None
    ) -> pd.DataFrame:
        """Interaction log under a logging policy that favours popular items.

        Long format, one row per event: ``event`` is impression, click, like,
        dwell (with ``dwell_seconds``) or follow (a topic: item_id -1, category
        set). Columns: user_id, item_id, category, age (the user's), timestamp
        (seconds since the log's start), event, dwell_seconds.
        """
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        n = self.n_users * impressions_per_user
        users = np.repeat(np.arange(self.n_users), impressions_per_user)
        # Logging policy: 60 % popularity-weighted, 40 % uniform.
        pop = self.item_popularity / self.item_popularity.sum()
        by_pop = rng.choice(self.n_items, size=n, p=pop)
        uniform = rng.integers(0, self.n_items, size=n)
        items = np.where(rng.random(n) < 0.6, by_pop, uniform)
        ts = np.sort(rng.uniform(0.0, days * 86400.0, size=n).reshape(self.n_users, -1), axis=1)
        ts = ts.reshape(-1)
        clicked, liked, dwell = self.sample_engagement(users, items, rng)

        parts = [
            pd.DataFrame(
                {"user_id": users, "item_id": items, "timestamp": ts, "event": "impression"}
            ),
            pd.DataFrame(
                {
                    "user_id": users[clicked],
                    "item_id": items[clicked],
                    "timestamp": ts[clicked] + 1,
                    "event": "click",
                }
            ),
            pd.DataFrame(
                {
                    "user_id": users[liked],
                    "item_id": items[liked],
                    "timestamp": ts[liked] + 2,
                    "event": "like",
                }
            ),
            pd.DataFrame(
                {
                    "user_id": users[clicked],
                    "item_id": items[clicked],
                    "timestamp": ts[clicked] + 3,
                    "event": "dwell",
                    "dwell_seconds": dwell[clicked],
                }
            ),
        ]
        # Users follow a few topics, mostly among their strongest interests.
        n_follows = rng.poisson(4.0, size=self.n_users)
        f_users = np.repeat(np.arange(self.n_users), n_follows)
        weights = self.user_interest[f_users] ** 2
        cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        f_cats = (rng.random((len(f_users), 1)) > cdf).sum(axis=1).clip(0, N_CATEGORIES - 1)
        f_ts = rng.uniform(0.0, days * 86400.0, size=len(f_users))
        parts.append(
            pd.DataFrame(
                {
                    "user_id": f_users,
                    "item_id": -1,
                    "timestamp": f_ts,
                    "event": "follow",
                    "category_idx": f_cats,
                }
            )
        )
        log = pd.concat(parts, ignore_index=True)
        log["dwell_seconds"] = log["dwell_seconds"].fillna(0.0)
        cat_idx = np.where(
            log["item_id"] >= 0,
            self.item_category[log["item_id"].clip(lower=0)],
            log["category_idx"].fillna(0).astype(np.int64),
        )
        log["category"] = np.asarray(CATEGORIES, dtype=object)[cat_idx]
        log["age"] = self.user_age[log["user_id"]]
        log = log.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)
        return log[["user_id", "item_id", "category", "age", "timestamp", "event", "dwell_seconds"]]


def make_world(seed: int = 7, n_users: int = 10_000, n_items: int = 10_000) -> World:
    """The ground-truth world: deterministic for a given seed and size."""
    rng = np.random.default_rng(seed)
    user_age = rng.integers(16, 75, size=n_users).astype(np.int64)
    interest = rng.dirichlet(np.full(N_CATEGORIES, 0.35), size=n_users) * N_CATEGORIES
    propensity = rng.normal(0.0, 0.35, size=n_users)
    category = rng.integers(0, N_CATEGORIES, size=n_items).astype(np.int64)
    age_hours = np.minimum(rng.exponential(60.0, size=n_items), 24.0 * 30)
    quality = rng.normal(0.0, 0.6, size=n_items)
    popularity = np.exp(1.0 * quality + rng.normal(0.0, 0.8, size=n_items)) * 100.0
    return World(
        seed=seed,
        n_users=n_users,
        n_items=n_items,
        user_age=user_age,
        user_interest=interest,
        user_propensity=propensity,
        item_category=category,
        item_age_hours=age_hours,
        item_quality=quality,
        item_popularity=popularity,
    )
