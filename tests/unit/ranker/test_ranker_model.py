import torch

from ranker.model.network import TwoTowerModel


def test_two_tower_model() -> None:
    model = TwoTowerModel(user_dim=10, item_dim=8, embedding_dim=64)
    user_features = torch.randn(32, 10)
    item_features = torch.randn(32, 8)
    scores = model(user_features, item_features)
    assert scores.shape == (32, 1)
    assert torch.all(scores >= 0) and torch.all(scores <= 1)


def test_towers_give_embeddings_of_the_declared_size() -> None:
    model = TwoTowerModel(user_dim=10, item_dim=8, embedding_dim=16)
    assert model.user_embedding(torch.randn(5, 10)).shape == (5, 16)
    assert model.item_embedding(torch.randn(7, 8)).shape == (7, 16)


def test_score_is_sigmoid_of_embedding_dot_product() -> None:
    torch.manual_seed(0)
    model = TwoTowerModel(user_dim=4, item_dim=3, embedding_dim=8).eval()
    u, i = torch.randn(6, 4), torch.randn(6, 3)
    with torch.inference_mode():
        dot = (model.user_embedding(u) * model.item_embedding(i)).sum(-1, keepdim=True)
        assert torch.allclose(model(u, i), torch.sigmoid(dot + model.bias), atol=1e-6)
