"""`ranker`: train, evaluate and serve models (and, later, route and simulate)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ranker.protocol import limits


def _cmd_train(args: argparse.Namespace) -> int:
    from ranker.model.train import train

    meta = train(args.profile, Path(args.out), seed=args.seed, version=args.version)
    m = meta["offline_metrics"]
    sys.stdout.write(
        f"trained {meta['version']} ({meta['description']}) in {meta['train_seconds']} s: "
        f"AUC {m['auc']:.4f}  NDCG@10 {m['ndcg_at_10']:.4f} -> {args.out}\n"
    )
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from ranker.model.network import ModelLoadError, export_onnx

    for uri in args.models:
        try:
            entry = export_onnx(uri)
        except ModelLoadError as exc:
            sys.stderr.write(f"ranker export-onnx: {exc}\n")
            return 2
        sys.stdout.write(f"{uri}: {entry['user_tower']}, {entry['item_tower']}\n")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ranker.model.network import ModelLoadError, load_model_dir
    from ranker.model.train import expected_ctr
    from ranker.world.ground_truth import make_world

    rows = []
    worlds: dict[int, object] = {}
    for uri in args.models:
        try:
            loaded = load_model_dir(uri)
        except ModelLoadError as exc:
            sys.stderr.write(f"ranker evaluate: {exc}\n")
            return 2
        seed = int(loaded.metadata.get("world_seed", 7))
        world = worlds.setdefault(seed, make_world(seed))
        m = loaded.metadata.get("offline_metrics", {})
        rows.append(
            {
                "model": uri,
                "version": loaded.version,
                "auc": m.get("auc"),
                "ndcg_at_10": m.get("ndcg_at_10"),
                "expected_ctr_at_10": expected_ctr(loaded, world),  # type: ignore[arg-type]
            }
        )
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    sys.stdout.write(f"{'model':<24} {'version':<8} {'AUC':>7} {'NDCG@10':>8} {'E[CTR@10]':>10}\n")
    for r in rows:
        sys.stdout.write(
            f"{r['model']:<24} {r['version']:<8} {r['auc']:>7.4f} {r['ndcg_at_10']:>8.4f} "
            f"{r['expected_ctr_at_10']:>10.4f}\n"
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from ranker.serve.app import RankerSettings, create_app

    try:
        settings = RankerSettings(
            model=args.model,
            variant=args.variant,
            scoring=args.scoring,
            backend=args.backend,
            cache_size=args.cache_size,
            index=args.index,
            ann_threshold=args.ann_threshold,
            torch_threads=args.torch_threads,
            # None: not given, so RANKER_INJECT_* from the environment apply
            **{
                key: value
                for key, value in (
                    ("inject_latency_ms", args.inject_latency_ms),
                    ("inject_error_rate", args.inject_error_rate),
                )
                if value is not None
            },
        )
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            sys.stderr.write(f"ranker serve: {where}: {err['msg']}\n")
        return 2
    try:
        bounds = limits.from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"ranker serve: {exc}\n")
        return 2
    app = create_app(settings, limits=bounds)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        timeout_graceful_shutdown=5, **limits.uvicorn_options(bounds),
    )  # fmt: skip
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    import uvicorn

    from ranker.route.router import Router

    try:
        bounds = limits.from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"ranker route: {exc}\n")
        return 2
    router = Router(
        Path(args.config), timeout=args.timeout, poll_interval=args.poll_interval, limits=bounds,
        interleaving_grace=args.interleaving_grace, attribution_window=args.attribution_window,
    )  # fmt: skip
    if router.table is None:
        sys.stderr.write(f"ranker route: {router.load_error}\n")
        return 2
    uvicorn.run(
        router, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        lifespan="on", timeout_graceful_shutdown=5, **limits.uvicorn_options(bounds),
    )  # fmt: skip
    return 0


def _byte_size(text: str) -> int:
    """N bytes, or a Kubernetes quantity (``2Gi``, ``500M``): a volume's sizeLimit as is."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}  # fmt: skip
    for suffix, factor in units.items():
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * factor
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (N, or e.g. 2Gi, 500M)")


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    import signal

    from ranker.storage.credentials import StorageConfig
    from ranker.storage.errors import ModelFetchError
    from ranker.storage.fetch import fetch_model
    from ranker.storage.retry import RetryPolicy

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds, so the partial download is removed

    previous = signal.signal(signal.SIGTERM, _terminate)
    config = None
    try:
        config = StorageConfig.load(Path(args.credentials_dir) if args.credentials_dir else None)
        result = fetch_model(
            args.uri, Path(args.dir), sha256=args.sha256, config=config,
            max_bytes=args.max_bytes, timeout=args.timeout,
            policy=RetryPolicy(retries=args.retries),
        )  # fmt: skip
    except ModelFetchError as exc:
        line = f"{exc.reason}: {exc}"
        sys.stderr.write(f"ranker fetch-model: {config.scrub(line) if config else line}\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"ranker fetch-model: {exc}\n")
        return 2
    except OSError as exc:  # the target's disk or directory: a path, never a credential
        sys.stderr.write(f"ranker fetch-model: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ranker", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a reference model into a versioned directory")
    t.add_argument("--profile", choices=["v1", "v2"], default="v2")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--seed", type=int, default=7, help="ground-truth world seed")
    t.add_argument("--version", default=None, help="model_version label (default: profile)")
    t.set_defaults(func=_cmd_train)

    x = sub.add_parser("export-onnx", help="add the ONNX towers to existing model directories")
    x.add_argument("models", nargs="+", help="model directories")
    x.set_defaults(func=_cmd_export_onnx)

    e = sub.add_parser("evaluate", help="offline AUC/NDCG@10 and expected CTR per model")
    e.add_argument("models", nargs="+", help="model directories")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("serve", help="serve a model over HTTP")
    s.add_argument("--model", required=True, help="model directory or file:// URI")
    s.add_argument("--variant", default="default", help="variant label on every metric")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--scoring", choices=["fast", "naive"], default="fast")
    s.add_argument(
        "--backend", choices=["auto", "onnx", "torch"], default="auto",
        help="towers: onnxruntime (no torch), torch, or auto (onnx when the model has it "
        "and onnxruntime is installed)",
    )  # fmt: skip
    s.add_argument("--cache-size", type=int, default=50_000)
    s.add_argument(
        "--index", choices=["auto", "exact", "ivf"], default="auto",
        help="catalog top-k search: exact scan, faiss IVF, or auto (IVF from "
        "--ann-threshold items up)",
    )  # fmt: skip
    s.add_argument("--ann-threshold", type=int, default=50_000,
                   help="catalog size from which --index auto uses IVF")  # fmt: skip
    s.add_argument("--torch-threads", type=int, default=1)
    s.add_argument("--log-level", default="info")
    s.add_argument(
        "--inject-latency-ms", type=float, default=None, metavar="MS",
        help="TEST ONLY: delay every /rank by MS milliseconds (or RANKER_INJECT_LATENCY_MS)",
    )  # fmt: skip
    s.add_argument(
        "--inject-error-rate", type=float, default=None, metavar="P",
        help="TEST ONLY: answer this share of /rank requests with a 500 "
        "(or RANKER_INJECT_ERROR_RATE)",
    )  # fmt: skip
    limits.add_arguments(s)
    s.set_defaults(func=_cmd_serve)

    r = sub.add_parser("route", help="the experiment's sticky router")
    r.add_argument("--config", required=True, help="routing.json (the routing ConfigMap)")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8080)
    r.add_argument("--timeout", type=float, default=2.0, help="seconds per upstream try")
    r.add_argument("--poll-interval", type=float, default=0.5, help="config file poll, seconds")
    r.add_argument("--interleaving-grace", type=float, default=0.05,
                   help="interleaving: seconds to wait for the second feed after the first "
                   "before serving the first alone")  # fmt: skip
    r.add_argument("--attribution-window", type=float, default=60.0,
                   help="interleaving: seconds after serving a feed during which its clicks "
                   "count towards its outcome")  # fmt: skip
    r.add_argument("--log-level", default="info")
    limits.add_arguments(r)
    r.set_defaults(func=_cmd_route)

    f = sub.add_parser(
        "fetch-model",
        help="fetch a model (file://, https://, s3://) into a directory, verified",
        description="Stream a model into a temporary directory next to DIR, verify it and "
        "rename it to DIR; on success print one JSON line {uri, digest, bytes, files, "
        "seconds}, on failure one line naming the error class and exit 1.",
    )  # fmt: skip
    f.add_argument(
        "uri", metavar="URI", help="file:///path, https://host/model.tar.gz, s3://bucket/prefix/"
    )
    f.add_argument(
        "dir",
        metavar="DIR",
        help="the model directory to create or replace (not a mount point: a directory "
        "inside the volume)",
    )
    f.add_argument(
        "--sha256",
        metavar="HEX",
        help="the expected digest (over the files' paths, sizes and sha256, as "
        "ranker.storage.digest computes it); a mismatch fails",
    )
    f.add_argument(
        "--credentials-dir",
        metavar="PATH",
        help="a mounted Secret: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, "
        "AWS_REGION, S3_ADDRESSING_STYLE, ca.crt, HTTPS_HEADERS (default: the environment)",
    )
    f.add_argument(
        "--max-bytes",
        type=_byte_size,
        metavar="N",
        help="fail when the model is larger (N, or a quantity like 2Gi); default: the "
        "disk's free space",
    )
    f.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to connect, and for each read (default 30)",
    )
    f.add_argument(
        "--retries",
        type=int,
        default=4,
        metavar="N",
        help="tries after the first on connection errors, timeouts, 5xx and throttling (default 4)",
    )
    f.set_defaults(func=_cmd_fetch_model)

    from ranker.world import simulate

    m = sub.add_parser("simulate", help="ground-truth users request feeds and react to them")
    simulate.add_arguments(m)
    m.set_defaults(func=simulate.run_cli)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
