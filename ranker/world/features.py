"""User and item features computed from an activity log.

The log is long format, one row per event (see ``ranker.world.ground_truth.World.activity_log``):
``user_id``, ``item_id``, ``event`` (impression | click | like | dwell; ``action``
and ``view`` are accepted as aliases), and optionally ``category``, ``age``
and ``dwell_seconds``. Every feature is finite: users or items without
enough events get neutral, smoothed values, never NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ranker.world.ground_truth import CATEGORIES

BASE_USER_FEATURES: tuple[str, ...] = (
    "age",
    "impressions",
    "total_interactions",
    "click_rate",
    "like_rate",
    "avg_dwell_seconds",
)
AFFINITY_FEATURES: tuple[str, ...] = tuple(f"affinity_{c}" for c in CATEGORIES)
FOLLOW_FEATURES: tuple[str, ...] = tuple(f"follows_{c}" for c in CATEGORIES)
USER_FEATURES: tuple[str, ...] = BASE_USER_FEATURES + AFFINITY_FEATURES + FOLLOW_FEATURES

BASE_ITEM_FEATURES: tuple[str, ...] = ("log_popularity", "age_days", "item_ctr")
CATEGORY_FEATURES: tuple[str, ...] = tuple(f"is_{c}" for c in CATEGORIES)
ITEM_FEATURES: tuple[str, ...] = BASE_ITEM_FEATURES + CATEGORY_FEATURES

_EVENT_ALIASES = {"view": "impression", "share": "like", "watch": "dwell"}
_PRIOR_IMPRESSIONS = 10.0  # strength of the shrinkage toward the global rate
_DEFAULT_AGE = 35.0


def _normalise_log(activity_df: pd.DataFrame) -> pd.DataFrame:
    df = activity_df
    if "event" not in df.columns and "action" in df.columns:
        df = df.rename(columns={"action": "event"})
    missing = {"user_id", "event"} - set(df.columns)
    if missing:
        raise ValueError(f"activity log lacks column(s): {', '.join(sorted(missing))}")
    df = df.copy()
    df["event"] = df["event"].astype(str).str.lower().replace(_EVENT_ALIASES)
    if "dwell_seconds" not in df.columns:
        df["dwell_seconds"] = 0.0
    df["dwell_seconds"] = pd.to_numeric(df["dwell_seconds"], errors="coerce").fillna(0.0)
    return df


def extract_user_features(activity_df: pd.DataFrame) -> pd.DataFrame:
    """One row per user (index ``user_id``), columns ``USER_FEATURES``.

    Rates are in [0, 1]; ``affinity_<category>`` is the user's click rate in
    that category shrunk toward the global rate, as the log of its ratio to the
    global rate (0.0 means "no evidence either way"); ``follows_<category>`` is
    the share of the topics the user follows that are in that category.
    """
    df = _normalise_log(activity_df)
    ev = df["event"]
    users = pd.Index(df["user_id"].unique(), name="user_id").sort_values()
    counts = (
        pd.crosstab(df["user_id"], ev)
        .reindex(index=users, columns=["impression", "click", "like", "dwell"], fill_value=0)
        .astype(np.float64)
    )
    impressions = counts["impression"]
    clicks = counts["click"]
    # A click without a logged impression still implies one was shown.
    shown = impressions.where(impressions >= clicks, clicks)
    out = pd.DataFrame(index=users)
    if "age" in df.columns:
        age = pd.to_numeric(df.groupby("user_id")["age"].first(), errors="coerce")
        out["age"] = age.reindex(users).fillna(_DEFAULT_AGE)
    else:
        out["age"] = _DEFAULT_AGE
    out["impressions"] = impressions
    out["total_interactions"] = clicks + counts["like"] + counts["dwell"]
    out["click_rate"] = np.where(shown > 0, clicks / shown.where(shown > 0, 1.0), 0.0)
    out["like_rate"] = np.clip(
        np.where(shown > 0, counts["like"] / shown.where(shown > 0, 1.0), 0.0), 0.0, 1.0
    )
    dwell = df[ev == "dwell"].groupby("user_id")["dwell_seconds"].mean()
    out["avg_dwell_seconds"] = dwell.reindex(users).fillna(0.0)

    global_rate = float(clicks.sum() / max(shown.sum(), 1.0)) or 1e-3
    if "category" in df.columns:
        by_cat = pd.crosstab([df["user_id"], df["category"]], ev)
        for name, cat in zip(AFFINITY_FEATURES, CATEGORIES, strict=True):
            try:
                sub = by_cat.xs(cat, level="category")
            except KeyError:
                sub = pd.DataFrame(index=users)
            c_imp = sub.get("impression", pd.Series(dtype=float)).reindex(users).fillna(0.0)
            c_clk = sub.get("click", pd.Series(dtype=float)).reindex(users).fillna(0.0)
            rate = (c_clk + _PRIOR_IMPRESSIONS * global_rate) / (
                np.maximum(c_imp, c_clk) + _PRIOR_IMPRESSIONS
            )
            out[name] = np.log(rate / global_rate)
        follows = (
            pd.crosstab(df.loc[ev == "follow", "user_id"], df.loc[ev == "follow", "category"])
            .reindex(index=users, columns=list(CATEGORIES), fill_value=0)
            .astype(np.float64)
        )
        share = follows.div(follows.sum(axis=1).where(lambda t: t > 0, 1.0), axis=0)
        for name, cat in zip(FOLLOW_FEATURES, CATEGORIES, strict=True):
            out[name] = share[cat].fillna(0.0)
    else:
        for name in AFFINITY_FEATURES + FOLLOW_FEATURES:
            out[name] = 0.0
    return out[list(USER_FEATURES)].astype(np.float64)


def extract_item_features(items: pd.DataFrame, activity_df: pd.DataFrame | None) -> pd.DataFrame:
    """One row per item (index ``item_id``), columns ``ITEM_FEATURES``.

    ``items`` needs item_id, category, age_hours and popularity.
    """
    idx = pd.Index(items["item_id"], name="item_id")
    out = pd.DataFrame(index=idx)
    out["log_popularity"] = np.log1p(items["popularity"].to_numpy(dtype=np.float64))
    out["age_days"] = items["age_hours"].to_numpy(dtype=np.float64) / 24.0
    if activity_df is not None and len(activity_df):
        df = _normalise_log(activity_df)
        counts = pd.crosstab(df["item_id"], df["event"]).reindex(
            index=idx, columns=["impression", "click"], fill_value=0
        )
        imp = counts["impression"].to_numpy(dtype=np.float64)
        clk = counts["click"].to_numpy(dtype=np.float64)
        global_rate = float(clk.sum() / max(imp.sum(), 1.0))
        out["item_ctr"] = (clk + _PRIOR_IMPRESSIONS * global_rate) / (
            np.maximum(imp, clk) + _PRIOR_IMPRESSIONS
        )
    else:
        out["item_ctr"] = 0.0
    cats = items["category"].astype(str).to_numpy()
    for name, cat in zip(CATEGORY_FEATURES, CATEGORIES, strict=True):
        out[name] = (cats == cat).astype(np.float64)
    return out[list(ITEM_FEATURES)].astype(np.float64)
