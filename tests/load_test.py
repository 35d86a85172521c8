"""Locust load test against the experiment's router (run by `make load`).

Headless and bounded: `make load` starts v1 and v2 rankers and a 50/50 router
on 127.0.0.1 (rankexp.local.stack) and runs this for a fixed time. Never point it
at anything but a loopback address.
"""

import random

from locust import HttpUser, between, task


class RankingUser(HttpUser):
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.user_id = random.randint(0, 9_999)

    @task(10)
    def rank(self) -> None:
        with self.client.post(
            "/rank", json={"user_id": self.user_id, "num_items": 50}, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            body = resp.json()
            items = body["items"]
            scores = [i["score"] for i in items]
            # an interleaved feed merges two rankers' lists: distinct items, not one order
            ordered = body.get("interleaved") or scores == sorted(scores, reverse=True)
            if len(items) != 50 or not ordered or len({i["item_id"] for i in items}) != 50:
                resp.failure("feed not 50 distinct items in order")
            elif random.random() < 0.3:
                echo = {"interleaving_token": body["interleaving_token"]} if body.get(
                    "interleaved") else {}  # fmt: skip
                self.client.post(
                    "/feedback",
                    json={"user_id": self.user_id, "item_id": items[0]["item_id"],
                          "event": "click", **echo},
                )  # fmt: skip

    @task(1)
    def new_user(self) -> None:
        self.user_id = random.randint(0, 9_999)

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
