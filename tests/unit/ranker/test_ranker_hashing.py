import subprocess
import sys

import numpy as np

from ranker.protocol.hashing import analysis_bucket, routing_bucket


def test_hashes_are_stable_across_processes_with_different_hash_seeds() -> None:
    code = (
        "from ranker.protocol.hashing import analysis_bucket, routing_bucket;"
        "print([analysis_bucket(u) for u in range(50)],"
        " [routing_bucket('s', u) for u in range(50)])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True,
            text=True, check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert len(outs) == 1
    here = str([analysis_bucket(u) for u in range(50)])
    assert here in outs.pop()


def test_buckets_are_uniform_and_independent_of_routing() -> None:
    users = range(64_000)
    a = np.array([analysis_bucket(u) for u in users])
    r = np.array([routing_bucket("exp-salt", u) for u in users])
    counts = np.bincount(a, minlength=64)
    # chi-square with 63 df: 99.9th percentile is about 103
    chi2 = ((counts - 1000) ** 2 / 1000).sum()
    assert chi2 < 103
    # users in the first half of the routing range spread evenly over analysis buckets
    half = np.bincount(a[r < 5000], minlength=64)
    assert half.min() > 0.8 * half.mean()


def test_salt_changes_the_routing() -> None:
    same = sum(routing_bucket("a", u) == routing_bucket("b", u) for u in range(1000))
    assert same < 10
