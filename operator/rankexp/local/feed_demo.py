"""`make demo`: serve a trained model as a real process and print one user's feed.

Until the full experiment demo lands, this is the walk-through: start
`ranker serve` on 127.0.0.1, wait for /ready, rank a feed over HTTP, print it
next to the user's true click probabilities, stop the server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from ranker.world.ground_truth import make_world
from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="models/v2")
    p.add_argument("--user", type=int, default=1)
    p.add_argument("--num-items", type=int, default=10)
    args = p.parse_args(argv)

    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ranker-demo-") as tmp:
        proc = Process(
            "ranker",
            [sys.executable, "-m", "ranker.cli", "serve", "--model", args.model,
             "--variant", "demo", "--host", "127.0.0.1", "--port", str(port)],
            log_path=Path(tmp) / "ranker.log",
        )  # fmt: skip
        proc.start()
        try:
            wait_for(lambda: is_ready(url), timeout=60, what=url, processes=[proc])
            req = urllib.request.Request(
                url + "/rank",
                json.dumps({"user_id": args.user, "num_items": args.num_items}).encode(),
                {"content-type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                feed = json.loads(resp.read())
        finally:
            proc.stop()

    world = make_world()
    out = sys.stdout.write
    out(f"ranker serve --model {args.model}  (on {url}, now stopped)\n")
    out(
        f"POST /rank {{user_id: {args.user}, num_items: {args.num_items}}} -> model "
        f"{feed['model_version']}, {feed['latency_ms']:.2f} ms, fallback={feed['fallback']}\n\n"
    )
    head = ("#", "item", "category", "age h", "score", "true P(click)")
    out(f"{head[0]:>2}  {head[1]:>6}  {head[2]:<9} {head[3]:>6}  {head[4]:>6}  {head[5]:>13}\n")
    known = args.user < world.n_users
    for n, item in enumerate(feed["items"], 1):
        truth = float(world.click_prob(args.user, item["item_id"])) if known else float("nan")
        out(f"{n:>2}  {item['item_id']:>6}  {item['category']:<9} {item['age_hours']:>6.1f}  "
            f"{item['score']:>6.3f}  {truth:>13.3f}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
