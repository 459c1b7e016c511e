"""Data service (core.api) through Flask's test client, and RemoteDataset against a real waitress server.

    .venv/bin/python -m pytest tests/test_api.py -q

A tiny customer `apitest_shop` is written to a temp customers folder (found by the real
discovery in core.dataset) with a small JSONL of Chinese conversations under a temp DATA_DIR.
"""
from __future__ import annotations

import builtins
import http.client
import io
import json
import os
import sys

import pytest

import customers
from core import dataset as data

CUSTOMER = "apitest_shop"
KEY = f"{CUSTOMER}/demo"
BASE = f"/api/v1/datasets/{KEY}"
N = 40
CUSTOMER_SRC = '''
from core.dataset import ConversationDataset


class ApiShop(ConversationDataset):
    """Test customer: the label is meta.q; a human takes over at the first message with 转人工."""

    good_threshold = 0.6
    language = "zh"
    title = "API test shop"

    def quality(self, conv):
        return float(conv.meta["q"])

    def intervention(self, conv):
        return next((n for n, m in enumerate(conv.messages) if "转人工" in m["content"]), -1)

    def context(self, conv):
        return {**conv.context, "turns": len(conv.messages)}
'''


def conversation(i: int) -> dict:
    messages = [{"role": "user", "content": f"你好，我的订单 {i} 什么时候发货？"},
                {"role": "assistant", "content": "已为您查询：明天发货。"}]
    if i % 4 == 0:
        messages.append({"role": "user", "content": "我要转人工客服"})
    return {"id": f"c{i:03d}", "messages": messages, "meta": {"q": (i % 10) / 10},
            "context": {"tools": [{"name": "订单查询", "result": {"order": i, "状态": "待发货"}}]}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Temp CSFORGE_HOME, customers folder and data folder holding apitest_shop/demo.jsonl."""
    root = tmp_path_factory.mktemp("api")
    cdir, ddir = root / "customers", root / "data"
    (cdir / CUSTOMER).mkdir(parents=True)
    (cdir / CUSTOMER / "__init__.py").write_text("")
    (cdir / CUSTOMER / "dataset.py").write_text(CUSTOMER_SRC, encoding="utf-8")
    (ddir / CUSTOMER).mkdir(parents=True)
    lines = [json.dumps(conversation(i), ensure_ascii=False) for i in range(N)]
    lines[5:5] = ["{not json", json.dumps({"id": "bad", "messages": [{"role": "robot", "content": "x"}]})]
    (ddir / CUSTOMER / "demo.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    secret = root / "secret.jsonl"
    secret.write_text(json.dumps({"id": "s", "messages": [{"role": "user", "content": "TOP-SECRET"}],
                                  "meta": {"q": 1}}) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSFORGE_HOME", str(root / "home"))
        mp.setattr(data, "CUSTOMERS_DIR", cdir)
        mp.setattr(data, "DATA_DIR", ddir)
        mp.setattr(customers, "__path__", [str(cdir), *customers.__path__])
        yield {"root": root, "data": ddir, "secret": secret}
    for name in [m for m in sys.modules if m.startswith(f"customers.{CUSTOMER}")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def local(env):
    return data.load_dataset(KEY)


@pytest.fixture(scope="module")
def client(env):
    from core.api import create_app

    return create_app().test_client()


@pytest.fixture(scope="module")
def server(env):
    from core.api import BackgroundServer

    with BackgroundServer(threads=4) as srv:
        yield srv


def get(client, url: str, status: int = 200) -> dict:
    resp = client.get(url)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    return resp.get_json()


# ---- listing, items, context ----------------------------------------------------------------------------
def test_lists_customers_and_datasets(client):
    body = get(client, "/api/v1/customers")
    assert [c["name"] for c in body["customers"]] == [CUSTOMER]
    shop = body["customers"][0]
    assert shop["title"] == "API test shop" and shop["good_threshold"] == 0.6
    assert shop["datasets"] == [{"name": "demo", "key": KEY, "available": True, "url": BASE}]
    assert "/api/v1/customers" in get(client, "/api/v1")["endpoints"]


def test_dataset_info(client, local):
    body = get(client, BASE)
    assert body["length"] == N == len(local)
    assert body["summary"] == local.summary() and body["summary"]["bad_records"] == 2


def test_item_matches_getitem_and_keeps_chinese_readable(client, local):
    resp = client.get(f"{BASE}/items/4")
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    raw = resp.get_data(as_text=True)
    assert "转人工" in raw and "\\u" not in raw  # readable UTF-8, not escapes
    body = resp.get_json()
    sample = local[4]
    assert body == {"index": 4, "id": sample.id, "dialog": sample.dialog, "label": sample.label,
                    "human_intervention_idx": 2}
    assert get(client, f"{BASE}/items/4?context=true")["context"] == sample.context


@pytest.mark.parametrize("query", ["", "?context=true"])
def test_item_fast_path_answers_like_the_flask_route(env, client, monkeypatch, query):
    from flask import Flask

    from core.api import create_app

    plain = create_app(fast_items=False).test_client()
    urls = [f"{BASE}/items/{i}{query}" for i in (0, 4, N - 1)]
    expected = [plain.get(url) for url in urls]
    client.get(f"{BASE}/items/0")  # loaded, so the fast path can answer
    monkeypatch.setattr(Flask, "full_dispatch_request", lambda self: 1 / 0)  # Flask routing is bypassed
    for url, want in zip(urls, expected):
        got = client.get(url)
        assert (got.status_code, got.headers["Content-Type"], got.data) == (200, want.headers["Content-Type"], want.data)


def test_context(client, local):
    body = get(client, f"{BASE}/items/7/context")
    assert body == {"index": 7, "id": "c007", "context": local.get_context(7)}
    assert body["context"]["tools"][0]["result"]["状态"] == "待发货"


# ---- pages and filters --------------------------------------------------------------------------------------
def test_page_offset_limit(client, local):
    body = get(client, f"{BASE}/items?offset=35&limit=10")
    assert body["total"] == N and body["offset"] == 35 and body["limit"] == 10
    assert [it["id"] for it in body["items"]] == local.ids[35:]
    assert get(client, f"{BASE}/items?offset=1000")["items"] == []


@pytest.mark.parametrize("query, keep", [
    ("label_min=0.7", lambda label, idx: label >= 0.7),
    ("label_max=0.2", lambda label, idx: label <= 0.2),
    ("label_min=0.3&label_max=0.5", lambda label, idx: 0.3 <= label <= 0.5),
    ("needs_human=true", lambda label, idx: idx >= 0),
    ("needs_human=false", lambda label, idx: idx < 0),
    ("needs_human=true&label_min=0.4", lambda label, idx: idx >= 0 and label >= 0.4),
])
def test_page_filters(client, local, query, keep):
    expected = [i for i, (label, idx) in enumerate(zip(local.labels, local.interventions)) if keep(label, idx)]
    assert expected and len(expected) < N
    body = get(client, f"{BASE}/items?{query}&limit=100")
    assert body["total"] == len(expected)
    assert [it["index"] for it in body["items"]] == expected
    assert all(keep(it["label"], it["human_intervention_idx"]) for it in body["items"])
    again = get(client, f"{BASE}/labels?{query}")  # served from the cached index list
    assert again["indices"] == expected and again["labels"] == [local.labels[i] for i in expected]


def test_labels_page_is_columnar(client, local):
    body = get(client, f"{BASE}/labels?offset=10&limit=5")
    assert body["total"] == N and body["indices"] == list(range(10, 15))
    assert body["ids"] == local.ids[10:15] and body["interventions"] == local.interventions[10:15]


# ---- stats, figures, errors -------------------------------------------------------------------------------------
def test_stats(client, local):
    body = get(client, f"{BASE}/stats")
    assert body["summary"] == local.summary()
    assert body["quantiles"]["label"]["p50"] == pytest.approx(local.stats()["label"].median())
    assert set(body["quantiles"]["turns"]) == {"p5", "p25", "p50", "p75", "p95"}


def test_figures_png_and_html(client):
    png = client.get(f"{BASE}/figures.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    html = client.get(f"{BASE}/figures.html")
    assert html.status_code == 200 and html.mimetype == "text/html"
    assert "<html" in html.get_data(as_text=True) and KEY in html.get_data(as_text=True)


def test_errors_endpoint_names_file_line_and_reason(env, client):
    body = get(client, f"{BASE}/errors")
    assert body["total"] == 2
    assert [(e["file"], e["where"]) for e in body["errors"]] == [("demo.jsonl", "line 6"), ("demo.jsonl", "line 7")]
    assert "invalid JSON" in body["errors"][0]["reason"] and "robot" in body["errors"][1]["reason"]
    assert str(env["root"]) not in json.dumps(body)  # file names only, no server paths


# ---- 404 / 400 / 500 -------------------------------------------------------------------------------------------
def test_unknown_names_and_indices_are_404_listing_what_exists(client):
    body = get(client, "/api/v1/datasets/nobody/demo/items/0", 404)
    assert "nobody" in body["message"] and body["known"] == [CUSTOMER]
    body = get(client, f"/api/v1/datasets/{CUSTOMER}/nothing/items/0", 404)
    assert body["known"] == ["demo"] and "demo" in body["message"]
    for index in (N, 10**12, -1):
        body = get(client, f"{BASE}/items/{index}", 404)
        assert "out of range" in body["message"] and body["length"] == N
    assert get(client, f"{BASE}/items/{N}/context", 404)["length"] == N
    assert get(client, "/api/v1/nowhere", 404)["status"] == 404


@pytest.mark.parametrize("query, words", [
    ("items?offset=abc", "offset must be an integer"),
    ("items?offset=-1", "offset must be between"),
    ("items?limit=0", "limit must be between"),
    ("items?limit=101", "limit must be between 1 and 100"),
    ("labels?limit=10001", "limit must be between 1 and 10000"),
    ("items?label_min=0.8&label_max=0.2", "label_min (0.8) is greater than label_max (0.2)"),
    ("items?label_min=high", "label_min must be a number"),
    ("items?label_max=nan", "label_max must be between 0 and 1"),
    ("items?label_min=2", "label_min must be between 0 and 1"),
    ("items?needs_human=maybe", "needs_human must be true or false"),
    ("items?labelmin=0.5", "unknown parameter(s) labelmin"),
    ("items/abc", "index must be an integer"),
    ("errors?limit=x", "limit must be an integer"),
])
def test_bad_params_are_400_with_a_message(client, query, words):
    body = get(client, f"{BASE}/{query}", 400)
    assert words in body["message"] and body["status"] == 400


def test_unexpected_error_is_500_json_and_service_keeps_serving(env, monkeypatch):
    from core.api import create_app

    def broken(ds):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(data, "visualise", broken)
    client = create_app().test_client()
    body = get(client, f"{BASE}/figures.html", 500)
    assert "RuntimeError" in body["message"] and "exploded" not in body["message"]  # details: server log only
    assert get(client, f"{BASE}/items/0")["id"] == "c000"


def test_dataset_reloads_when_its_file_changes(env, client):
    path = env["data"] / CUSTOMER / "grow.jsonl"
    path.write_text(json.dumps(conversation(1), ensure_ascii=False) + "\n", encoding="utf-8")
    assert get(client, f"/api/v1/datasets/{CUSTOMER}/grow")["length"] == 1
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(conversation(2), ensure_ascii=False) + "\n")
    assert get(client, f"/api/v1/datasets/{CUSTOMER}/grow/items/1")["id"] == "c002"
    path.unlink()
    assert "unknown dataset" in get(client, f"/api/v1/datasets/{CUSTOMER}/grow", 404)["message"]


# ---- path traversal --------------------------------------------------------------------------------------------
TRAVERSALS = [
    f"/api/v1/datasets/{CUSTOMER}/..%2F..%2Fsecret/items/0",
    f"/api/v1/datasets/{CUSTOMER}/..%252F..%252Fsecret/items/0",
    f"/api/v1/datasets/{CUSTOMER}/../../secret/items/0",
    "/api/v1/datasets/..%2F..%2F/secret/items/0",
    "/api/v1/datasets/../secret/items/0",
    f"/api/v1/datasets/{CUSTOMER}/%2Fetc%2Fpasswd/items/0",
    f"/api/v1/datasets/{CUSTOMER}/secret/items/0",
    f"/api/v1/datasets/{CUSTOMER}/demo%00/items/0",
    f"/api/v1/datasets/{CUSTOMER}/demo.jsonl/items/0",
    "/api/v1/datasets/%2Ftmp/secret/items/0",
]


def test_path_traversal_never_opens_files(env, client, monkeypatch):
    secret = str(env["secret"])
    seen: list[str] = []

    def spy(real):
        def wrapper(path, *args, **kwargs):
            seen.append(os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path))
            return real(path, *args, **kwargs)
        return wrapper

    for mod, name in ((builtins, "open"), (io, "open"), (os, "open"), (os, "stat")):
        monkeypatch.setattr(mod, name, spy(getattr(mod, name)))
    for url in TRAVERSALS + [url.replace("secret", secret.lstrip("/")) for url in TRAVERSALS]:
        resp = client.get(url)
        assert resp.status_code in (400, 404), url
        assert resp.mimetype == "application/json" and "TOP-SECRET" not in resp.get_data(as_text=True)
    assert client.get(f"{BASE}/items/0").status_code == 200  # the spies do see a real request's file
    monkeypatch.undo()
    assert any(p.endswith("demo.jsonl") for p in seen)
    assert not [p for p in seen if "secret" in p or "passwd" in p]


def test_path_traversal_over_a_real_socket(env, server):
    host, port = server.url.removeprefix("http://").split(":")
    for url in TRAVERSALS[:5]:  # raw paths: http.client does not normalise "..", unlike requests
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        assert resp.status in (400, 404) and "TOP-SECRET" not in body, url
        assert json.loads(body)["status"] == resp.status


# ---- RemoteDataset over a real waitress server -----------------------------------------------------------------
def test_remote_dataset_matches_local_item_for_item(server, local, monkeypatch):
    from core import remote

    monkeypatch.setattr(remote, "PAGE", 7)  # several label pages
    ds = remote.RemoteDataset(server.url, KEY)
    assert len(ds) == len(local) and ds.good_threshold == local.good_threshold
    assert [ds[i] for i in range(len(ds))] == [local[i] for i in range(len(local))]
    assert ds[-1] == local[-1] and ds.get_context(3) == local.get_context(3)
    assert ds.labels == local.labels and ds.interventions == local.interventions and ds.ids == local.ids
    assert ds.summary() == local.summary()
    assert [str(e) for e in ds.errors] == [f"demo.jsonl:{e.where}: {e.reason}" for e in local.errors]
    with pytest.raises(IndexError):
        ds[N]


def test_remote_dataset_in_a_dataloader(server, local):
    from torch.utils.data import DataLoader

    from core.remote import RemoteDataset

    ds = RemoteDataset(server.url, KEY)
    for workers in (0, 2):
        batches = list(DataLoader(ds, batch_size=8, collate_fn=list, num_workers=workers))
        assert [len(b) for b in batches] == [8] * 5
        assert [s.id for b in batches for s in b] == local.ids
        assert all(isinstance(s, data.Sample) for b in batches for s in b)


def test_remote_errors_name_url_and_server_message(server):
    from core.remote import RemoteDataError, RemoteDataset

    with pytest.raises(RemoteDataError, match=rf"{server.url}/api/v1/datasets/{CUSTOMER}/nope.*404.*demo"):
        RemoteDataset(server.url, f"{CUSTOMER}/nope")
    with pytest.raises(RemoteDataError, match="cannot reach"):
        RemoteDataset("http://127.0.0.1:9", KEY, retries=0, timeout=1)
    with pytest.raises(ValueError, match="customer/dataset"):
        RemoteDataset(server.url, "../etc/passwd")
