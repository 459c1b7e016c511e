"""Data service throughput: item requests from 16 concurrent keep-alive clients, waitress vs Flask's dev server.

    .venv/bin/python bench/api_bench.py                      # 10,000 generated conversations, 10 s per server
    .venv/bin/python bench/api_bench.py --seconds 5 --clients 16 --conversations 10000
    .venv/bin/python bench/api_bench.py --dataset shop_zh/demo   # a real customer dataset instead

Generates a canonical-form JSONL for a bench customer in a temp folder (its own CSFORGE_HOME,
customers and data folders), then starts the service in a subprocess (its own interpreter, so
server and clients do not share a GIL) three ways: ours (waitress with 8 threads, as
`python -m core.api` runs it, with the FastItems path), waitress with every request through
Flask routing, and the baseline: the same Flask app under Flask's threaded development server.
Each gets the same load: N client threads in this process, each with a keep-alive
requests.Session, GET /items/<random index> for a bounded time. Prints requests/s, p50/p99
latency, errors, the server's CPU time per request, and ours/baseline ratios. The clients cost
more CPU per request than the server does, so on a small machine they bound the requests/s.
Target (issue 2): >= 1,000 requests/s and p99 <= 50 ms on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CUSTOMER = "benchshop"
CUSTOMER_SRC = '''
from core.dataset import ConversationDataset


class BenchShop(ConversationDataset):
    """Bench customer: default label; a human takes over at the first message asking for 人工."""

    language = "zh"

    def intervention(self, conv):
        return next((n for n, m in enumerate(conv.messages) if "人工" in m["content"]), -1)
'''
TOPICS = ["订单什么时候发货？", "我想退货退款。", "物流三天没有更新了。", "这件衣服我穿什么尺码？",
          "请帮我开发票。", "忘记密码了怎么办？", "Where is my parcel?", "Can I change the address?"]
REPLIES = ["已为您查询，预计明天送达。", "建议您选择 M 码。", "退款已提交，3 个工作日内到账。",
           "I have checked your order: it ships tomorrow.", "发票已发送到您的邮箱。"]


# ---- data ----------------------------------------------------------------------------------------------
def generate(folder: Path, n: int, seed: int = 0) -> None:
    """A bench customer package and n canonical-form conversations under folder/{customers,data}."""
    rng = random.Random(seed)
    pkg = folder / "customers" / CUSTOMER
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "dataset.py").write_text(CUSTOMER_SRC, encoding="utf-8")
    out = folder / "data" / CUSTOMER
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "demo.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            messages = []
            for _ in range(rng.randint(1, 6)):
                messages.append({"role": "user", "content": rng.choice(TOPICS)})
                if rng.random() < 0.9:
                    messages.append({"role": "assistant", "content": rng.choice(REPLIES)})
            if rng.random() < 0.2:
                messages.append({"role": "user", "content": "我要转人工客服"})
            record = {"id": f"b{i:06d}", "messages": messages,
                      "context": {"tools": [{"name": "order_lookup", "result": {"order": i, "状态": "已发货"}}]}}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def use_folder(folder: Path) -> None:
    """Point discovery at the generated customer and data (this process only)."""
    import customers
    from core import dataset

    os.environ["CSFORGE_HOME"] = str(folder / "home")
    dataset.CUSTOMERS_DIR, dataset.DATA_DIR = folder / "customers", folder / "data"
    customers.__path__.insert(0, str(folder / "customers"))


# ---- server role (subprocess) --------------------------------------------------------------------------
SERVERS = {  # kind: (label, server, FastItems on)
    "ours": ("ours: waitress + fast item path", "waitress", True),
    "waitress-flask": ("waitress, Flask routing only", "waitress", False),
    "baseline": ("baseline: Flask dev server", "flask", False),
}


def serve(kind: str, folder: str | None, threads: int) -> None:
    """Serve the data service on a free port of 127.0.0.1; print its URL when listening."""
    import logging

    if folder:
        use_folder(Path(folder))
    from core.api import API, create_app

    _, server_kind, fast = SERVERS[kind]
    app = create_app(fast_items=fast)
    if server_kind == "waitress":  # what `python -m core.api` runs, with the same settings
        from waitress.server import create_server

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        server = create_server(app, host="127.0.0.1", port=0, threads=threads)
        print(f"serving on http://127.0.0.1:{server.effective_port}{API}", flush=True)
        server.run()
    else:
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines
        server = make_server("127.0.0.1", 0, app, threaded=True)
        print(f"serving on http://127.0.0.1:{server.port}{API}", flush=True)
        server.serve_forever()


def start(kind: str, folder: Path | None, threads: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, __file__, "--serve", kind, "--threads", str(threads)]
    if folder:
        cmd += ["--folder", str(folder)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.split()[-1].removesuffix("/api/v1")
    raise RuntimeError(f"{kind} server exited with {proc.wait()} before serving")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- client role -----------------------------------------------------------------------------------------
def requests_getter(url: str):
    """GET with a keep-alive requests.Session (what RemoteDataset uses): returns the status code."""
    import requests

    session = requests.Session()
    return lambda path: session.get(url + path, timeout=10).status_code


def raw_getter(url: str):
    """GET with one keep-alive http.client connection: a few times less client CPU than requests."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(path: str) -> int:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    return get


CLIENTS = {"requests": requests_getter, "http.client": raw_getter}


def load(url: str, key: str, n: int, clients: int, seconds: float, server_pid: int, kind: str = "requests") -> dict:
    """clients threads, each with its own keep-alive connection, GET random items until the time is up."""
    base = f"/api/v1/datasets/{key}/items/"
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = threading.Event()

    def client(k: int) -> None:
        rng, get, lat = random.Random(k), CLIENTS[kind](url), latencies[k]
        get(base + "0")  # open the keep-alive connection outside the timing
        start_gate.wait()
        while not deadline.is_set():
            t0 = time.perf_counter()
            try:
                ok = get(base + str(rng.randrange(n))) == 200
            except Exception:  # noqa: BLE001 - counted, the load goes on
                ok = False
            lat.append(time.perf_counter() - t0)
            errors[k] += not ok

    start_gate = threading.Barrier(clients + 1)
    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for w in workers:
        w.start()
    start_gate.wait()
    t0, cpu0, client0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    time.sleep(seconds)
    deadline.set()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(server_pid) - cpu0
    client_cpu = time.process_time() - client0
    lat = sorted(x for per in latencies for x in per)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "errors": sum(errors), "cpu_us": cpu / max(1, len(lat)) * 1e6,
            "client_cpu_us": client_cpu / max(1, len(lat)) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed load per server")
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients (issue 2: 16)")
    parser.add_argument("--conversations", type=int, default=10_000, help="size of the generated dataset")
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    parser.add_argument("--client", choices=tuple(CLIENTS), default="requests",
                        help="HTTP client of the load threads; http.client costs less CPU, so it shows more of the server")
    parser.add_argument("--dataset", help="benchmark an existing customer/dataset instead of generated data")
    parser.add_argument("--serve", choices=tuple(SERVERS), help=argparse.SUPPRESS)  # subprocess role
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.folder, args.threads)
        return 0

    with tempfile.TemporaryDirectory(prefix="csforge-api-bench-") as tmp:
        folder = None if args.dataset else Path(tmp)
        if folder:
            generate(folder, args.conversations)
            use_folder(folder)
        key = args.dataset or f"{CUSTOMER}/demo"
        from core.dataset import load_dataset

        t0 = time.perf_counter()
        n = len(load_dataset(key))  # also fills the label cache both servers then read
        print(f"dataset {key}: {n} conversations, loaded in {time.perf_counter() - t0:.1f} s")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared); "
              f"{args.clients} {args.client} clients in this process, each server in its own")
        results = {}
        for kind, (label, _, _) in SERVERS.items():
            proc, url = start(kind, folder, args.threads)
            try:
                results[kind] = r = load(url, key, n, args.clients, args.seconds, proc.pid, args.client)
            finally:
                proc.terminate()
                proc.wait(10)
            print(f"{label:34} {r['rps']:7.0f} req/s   p50 {r['p50_ms']:6.1f} ms   p99 {r['p99_ms']:6.1f} ms   "
                  f"CPU/req server {r['cpu_us']:4.0f} us, clients {r['client_cpu_us']:4.0f} us   "
                  f"{r['requests']} requests, {r['errors']} errors", flush=True)
        ours, base = results["ours"], results["baseline"]
        print(f"ratio ours/baseline: {ours['rps'] / base['rps']:.2f}x requests/s, "
              f"{base['p99_ms'] / ours['p99_ms']:.2f}x lower p99, {base['cpu_us'] / ours['cpu_us']:.2f}x less server CPU per request")
        print(f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        ok = ours["rps"] >= 1000 and ours["p99_ms"] <= 50 and not ours["errors"]
        print(f"target >= 1,000 req/s and p99 <= 50 ms: {'met' if ok else 'NOT met'} "
              f"(at {ours['cpu_us']:.0f} us/req one server core allows ~{1e6 / ours['cpu_us']:.0f} req/s)")
        if ours["client_cpu_us"] > ours["cpu_us"]:
            print(f"the {args.client} clients used more CPU per request than the server: on a small machine they "
                  f"bound these figures; --client http.client measures more of the server")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
