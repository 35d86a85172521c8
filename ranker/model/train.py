"""Train a two-tower model on the synthetic world and write a model directory.

Features come from the first 70 % of the activity log, click labels from the
last 30 %, so a feature never sees its own label. One user in ten is held out
of training; offline AUC and NDCG@10 are measured on those users' labels.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from ranker.model.network import LoadedModel, TwoTowerModel, save_model_dir
from ranker.world import features as F
from ranker.world.ground_truth import World, make_world

FEATURE_FRACTION = 0.7
HOLDOUT_MODULUS = 10  # user_id % 10 == 0 is held out


@dataclass(frozen=True)
class Profile:
    """What distinguishes the reference models."""

    user_features: tuple[str, ...]
    item_features: tuple[str, ...]
    embedding_dim: int
    hidden_dim: int
    epochs: int
    description: str


PROFILES: dict[str, Profile] = {
    # v1 sees popularity, freshness and activity levels but no interests:
    # it can only learn a popularity ranking.
    "v1": Profile(
        F.BASE_USER_FEATURES,
        F.BASE_ITEM_FEATURES,
        embedding_dim=16,
        hidden_dim=32,
        epochs=2,
        description="popularity and freshness only",
    ),
    # v2 also sees each user's per-category affinity and the item's category.
    "v2": Profile(
        F.USER_FEATURES,
        F.ITEM_FEATURES,
        embedding_dim=32,
        hidden_dim=64,
        epochs=6,
        description="personalised: category affinities and followed topics",
    ),
}


@dataclass
class Dataset:
    world: World
    user_feats: pd.DataFrame  # from the feature window, indexed by user_id
    item_feats: pd.DataFrame
    serve_user_feats: pd.DataFrame  # from the whole log: what serving uses
    serve_item_feats: pd.DataFrame
    labels: pd.DataFrame  # user_id, item_id, clicked, liked
    data_hash: str


def build_dataset(seed: int = 7, impressions_per_user: int = 80) -> Dataset:
    world = make_world(seed)
    log = world.activity_log(impressions_per_user=impressions_per_user)
    cut = log["timestamp"].max() * FEATURE_FRACTION
    early = log[log["timestamp"] < cut]
    late = log[log["timestamp"] >= cut]
    imps = late[late["event"] == "impression"][["user_id", "item_id", "timestamp"]]
    clicks = late[late["event"] == "click"][["user_id", "item_id", "timestamp"]].assign(clicked=1)
    likes = late[late["event"] == "like"][["user_id", "item_id", "timestamp"]].assign(liked=1)
    clicks = clicks.assign(timestamp=clicks["timestamp"] - 1)
    likes = likes.assign(timestamp=likes["timestamp"] - 2)
    labels = imps.merge(clicks, how="left", on=["user_id", "item_id", "timestamp"])
    labels = labels.merge(likes, how="left", on=["user_id", "item_id", "timestamp"])
    labels = labels.fillna({"clicked": 0, "liked": 0}).astype(
        {"clicked": np.int64, "liked": np.int64}
    )
    digest = hashlib.sha256(pd.util.hash_pandas_object(log, index=False).to_numpy().tobytes())
    all_users = pd.Index(np.arange(world.n_users), name="user_id")
    user_feats = F.extract_user_features(early).reindex(all_users)
    user_feats = user_feats.fillna(user_feats.median())
    return Dataset(
        world=world,
        user_feats=user_feats,
        item_feats=F.extract_item_features(world.items, early),
        serve_user_feats=F.extract_user_features(log),
        serve_item_feats=F.extract_item_features(world.items, log),
        labels=labels[["user_id", "item_id", "clicked", "liked"]],
        data_hash=digest.hexdigest(),
    )


def auc_score(y: npt.NDArray[Any], s: npt.NDArray[Any]) -> float:
    """Area under the ROC curve (Mann-Whitney form, ties averaged)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ndcg_at_k(
    user_ids: npt.NDArray[Any], gains: npt.NDArray[Any], scores: npt.NDArray[Any], k: int = 10
) -> float:
    """Mean NDCG@k over users with at least one positive gain."""
    df = pd.DataFrame({"u": user_ids, "g": gains, "s": scores})
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total, n = 0.0, 0
    for _, grp in df.groupby("u", sort=False):
        g = grp["g"].to_numpy(dtype=np.float64)
        if g.max() <= 0:
            continue
        order = np.argsort(-grp["s"].to_numpy(), kind="stable")[:k]
        dcg = float((g[order] * discounts[: len(order)]).sum())
        ideal = np.sort(g)[::-1][:k]
        total += dcg / float((ideal * discounts[: len(ideal)]).sum())
        n += 1
    return total / n if n else float("nan")


def _tensors(
    ds: Dataset, prof: Profile, rows: pd.DataFrame
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ux = ds.user_feats[list(prof.user_features)].to_numpy(np.float32)
    ix = ds.item_feats[list(prof.item_features)].to_numpy(np.float32)
    u = torch.from_numpy(ux[rows["user_id"].to_numpy()])
    i = torch.from_numpy(ix[rows["item_id"].to_numpy()])
    y = torch.from_numpy(rows["clicked"].to_numpy(np.float32)).unsqueeze(1)
    return u, i, y


def train_model(
    ds: Dataset, prof: Profile, seed: int = 0, batch_size: int = 2048, lr: float = 3e-3
) -> tuple[TwoTowerModel, dict[str, float]]:
    torch.manual_seed(seed)
    holdout = ds.labels["user_id"] % HOLDOUT_MODULUS == 0
    train_rows, test_rows = ds.labels[~holdout], ds.labels[holdout]
    u, i, y = _tensors(ds, prof, train_rows)
    model = TwoTowerModel(
        len(prof.user_features), len(prof.item_features), prof.embedding_dim, prof.hidden_dim
    )
    model.set_normalisation(u, i)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(prof.epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model.logits(u[idx], i[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    tu, ti, _ = _tensors(ds, prof, test_rows)
    with torch.inference_mode():
        s = model(tu, ti).squeeze(1).numpy()
    gains = test_rows["clicked"].to_numpy() + test_rows["liked"].to_numpy()
    metrics = {
        "auc": auc_score(test_rows["clicked"].to_numpy(), s),
        "ndcg_at_10": ndcg_at_k(test_rows["user_id"].to_numpy(), gains, s, k=10),
    }
    return model, metrics


def expected_ctr(loaded: LoadedModel, world: World, n_users: int = 1000, k: int = 10) -> float:
    """Mean true click probability of each held-out user's top-k under this model."""
    users = np.arange(0, world.n_users, HOLDOUT_MODULUS)[:n_users]
    pos = {int(uid): n for n, uid in enumerate(loaded.user_ids)}
    with torch.inference_mode():
        items = loaded.model.item_embedding(torch.from_numpy(loaded.item_x))
        rows = np.array([pos[int(uid)] for uid in users])
        emb = loaded.model.user_embedding(torch.from_numpy(loaded.user_x[rows]))
        top = torch.topk(emb @ items.T, k, dim=1).indices.numpy()
    item_ids = loaded.item_ids[top]
    return float(world.click_prob(users[:, None], item_ids).mean())


def train(
    profile: str,
    out: Path,
    seed: int = 7,
    version: str | None = None,
    init_seed: int | None = None,
) -> dict[str, Any]:
    """Train one reference profile and write its model directory; return the metadata.

    ``seed`` is the ground-truth world's; ``init_seed`` (default: ``seed``) seeds the
    weights' initialisation and the batch order, so a second model of the same world,
    data and profile differs only by it (``make bench-interleaving``'s near-identical
    pair)."""
    prof = PROFILES[profile]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ds = build_dataset(seed)
    init = seed if init_seed is None else init_seed
    model, metrics = train_model(ds, prof, seed=init)
    seconds = time.perf_counter() - t0
    schema = {
        "user_features": list(prof.user_features),
        "item_features": list(prof.item_features),
        "user_dim": len(prof.user_features),
        "item_dim": len(prof.item_features),
        "embedding_dim": prof.embedding_dim,
        "hidden_dim": prof.hidden_dim,
    }
    items = ds.world.items
    snapshot = {
        "user_ids": ds.serve_user_feats.index.to_numpy(np.int64),
        "user_x": ds.serve_user_feats[list(prof.user_features)].to_numpy(np.float32),
        "item_ids": ds.serve_item_feats.index.to_numpy(np.int64),
        "item_x": ds.serve_item_feats[list(prof.item_features)].to_numpy(np.float32),
        "item_category": items["category_idx"].to_numpy(np.int64),
        "item_age_hours": items["age_hours"].to_numpy(np.float64),
        "item_popularity": items["popularity"].to_numpy(np.float64),
    }
    metadata = {
        "version": version or profile,
        "profile": profile,
        "description": prof.description,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "world_seed": seed,
        **({"init_seed": init} if init != seed else {}),
        "training_data_sha256": ds.data_hash,
        "training_rows": int((ds.labels["user_id"] % HOLDOUT_MODULUS != 0).sum()),
        "offline_metrics": metrics,
        "train_seconds": round(seconds, 2),
        "torch_version": torch.__version__,
    }
    save_model_dir(out, model, schema, metadata, snapshot)
    return metadata
