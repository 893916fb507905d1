"""Blob fetch over libp2p on loopback against sha256 over the same bytes (not part of the test suite).

    .venv/bin/python benchmarks/blob_fetch.py [--size-mb 540] [--path FILE]

A server process puts a blob (random bytes of --size-mb, or the file at --path, e.g. a model
blob under a store's blobs/) into its own store and announces it; this process finds it on the
DHT and fetches it, hashing every byte on arrival. Printed side by side: fetch MB/s; sha256 MB/s
over the same bytes on one core (hashing only, from a hot page cache); their ratio (target:
fetch >= 70% of hashing); the fetching process's resident memory before and at its peak during
the fetch (the blob is streamed, so the growth stays near readahead x chunk_size, not the blob);
and CPU seconds per process, which show what bounds the rate on a machine with few cores.

`measure(size_mb)` returns the same figures as a dict, for benchmarks/network.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def _serve(store_dir: Path, size_mb: int, path: str | None) -> None:
    """The server side (run as a child process): store the blob, announce it, serve until stdin closes."""
    from bitswarm.node.exchange import BlobExchange
    from bitswarm.store import BlobStore

    store = BlobStore(store_dir)
    if path is None:
        src = store_dir / "random.bin"
        with open(src, "wb") as f:  # in pieces: the server must not hold the blob either
            for _ in range(size_mb):
                f.write(os.urandom(MB))
        cid = store.put(src)
        src.unlink()
    else:
        cid = store.put(Path(path))
    os.sync()  # so the fetch does not pay for writing back the server's copy
    with BlobExchange(store, policy="announced") as ex:
        ex.announce(cid)
        print(json.dumps({"cid": cid, "maddrs": ex.maddrs, "size": store.size(cid)}), flush=True)
        sys.stdin.read()


def _tree_cpu(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) of a process and each of its descendants, by name:pid."""
    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[f"{p.name()}:{p.pid}"] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _sha256_rate(path: Path) -> float:
    """MB/s of hashlib.sha256 over the file's bytes, timing only the hashing (one core)."""
    h, spent = hashlib.sha256(), 0.0
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            t = time.perf_counter()
            h.update(chunk)
            spent += time.perf_counter() - t
    return os.path.getsize(path) / MB / spent


def measure(size_mb: int, path: str | None = None, workdir: str | None = None) -> dict:
    """Fetch a size_mb blob (or the file at `path`) from a peer on loopback; figures as a dict."""
    from bitswarm.node.exchange import BlobExchange
    from bitswarm.store import BlobStore

    with tempfile.TemporaryDirectory(dir=workdir, prefix="blob-fetch-") as d:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(Path(d) / "server"), "--size-mb", str(size_mb)]
            + (["--path", path] if path else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError(f"the serving process exited with status {server.wait()}")
            offer = json.loads(line)
            me = psutil.Process()
            with BlobExchange(BlobStore(Path(d) / "client"), bootstrap=offer["maddrs"]) as ex:
                rss_before = me.memory_info().rss
                peak, stop = [rss_before], threading.Event()

                def sample() -> None:
                    while not stop.wait(0.005):
                        peak[0] = max(peak[0], me.memory_info().rss)

                sampler = threading.Thread(target=sample, daemon=True)
                cpu0 = {**_tree_cpu(me), **_tree_cpu(psutil.Process(server.pid))}
                sampler.start()
                t0 = time.perf_counter()
                ex.fetch(offer["cid"])
                seconds = time.perf_counter() - t0
                stop.set()
                sampler.join()
                cpu1 = {**_tree_cpu(me), **_tree_cpu(psutil.Process(server.pid))}
                blob = ex.store.blob_path(offer["cid"])
                hash_rate = _sha256_rate(blob)
        finally:
            server.stdin.close()
            server.wait(timeout=60)
    size = offer["size"]
    fetch_rate = size / MB / seconds
    cpu = {k: round(v - cpu0.get(k, 0.0), 2) for k, v in cpu1.items() if v - cpu0.get(k, 0.0) >= 0.01}
    return {
        "size_mb": round(size / MB, 1),
        "fetch_s": round(seconds, 2),
        "fetch_mb_s": round(fetch_rate),
        "sha256_mb_s": round(hash_rate),
        "fetch_over_sha256": round(fetch_rate / hash_rate, 3),
        "target": ">= 0.7",
        "rss_before_mb": round(rss_before / MB),
        "rss_peak_mb": round(peak[0] / MB),
        "rss_growth_mb": round((peak[0] - rss_before) / MB),
        "cpu_s_during_fetch": cpu,
        "cpu_cores": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=540)
    ap.add_argument("--path", help="fetch this file's bytes instead of random ones")
    ap.add_argument("--workdir", help="where both stores go (default: the system's temporary directory)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # the child process's role
    args = ap.parse_args()
    if args.serve:
        _serve(Path(args.serve), args.size_mb, args.path)
        return
    r = measure(args.size_mb, args.path, args.workdir)
    print(f"blob            {r['size_mb']} MB in {r['fetch_s']} s")
    print(f"fetch           {r['fetch_mb_s']} MB/s (libp2p on loopback, hashed and written on arrival)")
    print(f"sha256, 1 core  {r['sha256_mb_s']} MB/s")
    print(f"ratio           {r['fetch_over_sha256']} (target {r['target']})")
    print(f"fetcher RSS     {r['rss_before_mb']} MB before, {r['rss_peak_mb']} MB at peak (+{r['rss_growth_mb']} MB)")
    print(f"CPU s           {r['cpu_s_during_fetch']} on {r['cpu_cores']} cores")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
