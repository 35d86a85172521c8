"""Benchmark: `ranker fetch-model s3://...` against the S3 server's own raw GET throughput.

Starts versitygw (built by tools/versitygw.sh) on 127.0.0.1 over a temporary directory,
uploads models of 10 MB, 100 MB and 1 GB (a copy of the checkout's models/v2 padded with
one random file) through the S3 API, then, for each size and each repeat, interleaved:

  * raw GET: the same objects listed and streamed with the same client library as the
    fetch (urllib3, SigV4 from ranker.storage.sigv4), 1 MiB chunks, bytes discarded;
    the server's own ceiling for one sequential stream;
  * GET + sha256 + write: the same stream, each chunk hashed and written to a file
    (in this process): what any verifying fetch must do at least;
  * `ranker fetch-model`: the command as the init container runs it, a process of its
    own; throughput from the seconds it reports (the fetch itself), its wall time
    (start-up included) and its peak RSS (ru_maxrss from wait4).

Prints a table with medians over the repeats, fetch/raw (issue 25's target: >= 0.8) and
whether the fetch's memory stays flat across sizes. Figures, not pass/fail. On a 2-core
machine the server, the client and the disk share the cores, so expect noise: compare
rows of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import urllib3

from ranker.storage.digest import HashingWriter
from ranker.storage.sigv4 import sign
from rankexp.local.process import Process, free_ports, wait_for

REPO = Path(__file__).resolve().parents[1]
ACCESS, SECRET, BUCKET = "bench", "bench-secret-0123456789", "bench"
CHUNK = 1 << 20
SIZES = {"10MB": 10 * 10**6, "100MB": 100 * 10**6, "1GB": 10**9}


@dataclass
class Server:
    endpoint: str
    http: urllib3.PoolManager

    def request(self, method: str, path: str, query: dict[str, str] | None = None,
                body: object = None, headers: dict[str, str] | None = None,
                preload: bool = True) -> urllib3.BaseHTTPResponse:  # fmt: skip
        host = self.endpoint.removeprefix("http://")
        signed = sign(
            method, host, path, query or {}, headers or {}, access_key=ACCESS,
            secret_key=SECRET, region="us-east-1", payload_hash="UNSIGNED-PAYLOAD",
        )  # fmt: skip
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return self.http.request(method, url, body=body, headers=signed, preload_content=preload)

    def put_dir(self, prefix: str, src: Path) -> None:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(src).as_posix()
            length = {"content-length": str(path.stat().st_size)}
            with path.open("rb") as f:
                resp = self.request("PUT", f"/{BUCKET}/{key}", body=f, headers=length)
            if resp.status != 200:
                raise RuntimeError(f"PUT {path.name}: HTTP {resp.status} {resp.data[:200]!r}")

    def keys(self, prefix: str) -> list[str]:
        resp = self.request("GET", f"/{BUCKET}", {"list-type": "2", "prefix": prefix})
        root = ET.fromstring(resp.data)
        return [el.text or "" for el in root.iter() if el.tag.endswith("Key")]

    def stream(self, prefix: str, sink: Callable[[str, urllib3.BaseHTTPResponse], int]) -> int:
        total = 0
        for key in self.keys(prefix):
            resp = self.request("GET", f"/{BUCKET}/{key}", preload=False)
            total += sink(key, resp)
            resp.release_conn()
        return total


def discard(_key: str, resp: urllib3.BaseHTTPResponse) -> int:
    n = 0
    for chunk in resp.stream(CHUNK):
        n += len(chunk)
    return n


def hash_and_write(out_dir: Path) -> Callable[[str, urllib3.BaseHTTPResponse], int]:
    def sink(key: str, resp: urllib3.BaseHTTPResponse) -> int:
        with (out_dir / key.replace("/", "_")).open("wb") as f:
            w = HashingWriter(f, key)
            for chunk in resp.stream(CHUNK):
                w.write(chunk)
        return w.size

    return sink


def make_model(src: Path, dest: Path, size: int) -> None:
    shutil.copytree(src, dest)
    have = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    with (dest / "padding.bin").open("wb") as f:
        left = max(0, size - have)
        while left:
            n = min(left, 16 * CHUNK)
            f.write(os.urandom(n))
            left -= n


def fetch_cli(uri: str, target: Path, creds: Path) -> tuple[dict[str, object], float, float]:
    """(the JSON line, wall seconds, peak RSS MB) of one `ranker fetch-model` process."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ranker.cli", "fetch-model", uri, str(target),
         "--credentials-dir", str(creds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    # the output is a few lines, far below a pipe's buffer: wait4 first, for the rusage
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"fetch-model failed: {err.decode()[-2000:]}")
    rss = usage.ru_maxrss / 1024  # KiB on Linux
    return json.loads(out), wall, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "v2"), help="the model to pad")
    ap.add_argument("--sizes", default="10MB,100MB,1GB", help=f"of {', '.join(SIZES)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    built = subprocess.run(["bash", str(REPO / "tools" / "versitygw.sh")], capture_output=True,
                           text=True, check=True)  # fmt: skip
    binary = built.stdout.strip().splitlines()[-1]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-models-"))
    (port,) = free_ports(1)
    data = work / "s3"
    data.mkdir(parents=True, exist_ok=True)
    proc = Process("versitygw", [binary, "--access", ACCESS, "--secret", SECRET, "--port",
                                 f"127.0.0.1:{port}", "--quiet", "posix", str(data)],
                   log_path=work / "versitygw.log")  # fmt: skip
    proc.start()
    server = Server(f"http://127.0.0.1:{port}", urllib3.PoolManager())
    creds = work / "creds"
    creds.mkdir(exist_ok=True)
    for key, value in {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                       "AWS_ENDPOINT_URL": server.endpoint}.items():  # fmt: skip
        (creds / key).write_text(value)
    try:
        wait_for(lambda: server.http.request("GET", server.endpoint + "/", retries=False).status
                 in (200, 403), timeout=30, what="versitygw", processes=[proc])  # fmt: skip
        server.request("PUT", f"/{BUCKET}")
        for name in sizes:
            src = work / "src" / name
            make_model(Path(args.model), src, SIZES[name])
            server.put_dir(f"{name}/", src)
            shutil.rmtree(src)  # the server has its copy
            print(f"uploaded {name}", file=sys.stderr)
        rows = {name: {"raw": [], "hw": [], "fetch": [], "wall": [], "rss": []} for name in sizes}
        for rep in range(args.repeats):
            for name in sizes:
                r = rows[name]
                t = time.perf_counter()
                n = server.stream(f"{name}/", discard)
                r["raw"].append(n / (time.perf_counter() - t))
                out = work / "hw"
                out.mkdir(exist_ok=True)
                t = time.perf_counter()
                n = server.stream(f"{name}/", hash_and_write(out))
                r["hw"].append(n / (time.perf_counter() - t))
                shutil.rmtree(out)
                target = work / "volume" / "model"
                line, wall, rss = fetch_cli(f"s3://{BUCKET}/{name}/", target, creds)
                r["fetch"].append(float(line["bytes"]) / float(line["seconds"]))  # type: ignore[arg-type]
                r["wall"].append(wall)
                r["rss"].append(rss)
                shutil.rmtree(target)
                print(
                    f"repeat {rep + 1} {name}: raw {r['raw'][-1] / 1e6:.0f} MB/s, fetch "
                    f"{r['fetch'][-1] / 1e6:.0f} MB/s, rss {rss:.0f} MB",
                    file=sys.stderr,
                )
    finally:
        proc.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    print(f"\nranker fetch-model vs raw GET from versitygw on 127.0.0.1 "
          f"(medians of {args.repeats}; {os.cpu_count()} CPUs)\n")  # fmt: skip
    print(
        "| model | raw GET MB/s | GET+sha256+write MB/s | fetch-model MB/s | fetch/raw | "
        "fetch/(GET+sha256+write) | process wall s | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sizes:
        r = rows[name]
        raw, hw, fetch = med(r["raw"]), med(r["hw"]), med(r["fetch"])
        print(f"| {name} | {raw / 1e6:.0f} | {hw / 1e6:.0f} | {fetch / 1e6:.0f} | "
              f"{fetch / raw:.2f} | {fetch / hw:.2f} | {med(r['wall']):.1f} | "
              f"{max(r['rss']):.0f} |")  # fmt: skip
    peaks = [max(rows[name]["rss"]) for name in sizes]
    spread = max(peaks) - min(peaks)
    verdict = "flat" if spread < 16 else "NOT flat"
    print(f"\npeak RSS across sizes: {min(peaks):.0f}-{max(peaks):.0f} MB "
          f"(spread {spread:.0f} MB): {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
