"""HTTP data service over the customer datasets, served by waitress.

    python -m core.api --port 5000                        # http://127.0.0.1:5000/api/v1
    python -m core.api --port 5000 --host 0.0.0.0 --threads 8
    curl 127.0.0.1:5000/api/v1/customers
    curl '127.0.0.1:5000/api/v1/datasets/shop_zh/demo/items?needs_human=true&limit=5'

Datasets are addressed by name only ("customer/dataset", two path segments resolved against
the customers found under customers/), so a request can never make the server open a path of
its choosing. Errors are JSON: 400 for bad parameters, 404 for unknown names and indices out of
range (the message lists what exists), 500 for anything unexpected; the server keeps serving.
`core.remote.RemoteDataset` is the torch Dataset client of this service.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from core import dataset as data
from core.guard import BadName, TokenGate, check_shape, clip, exposure_warning, positive
from core.guard import create_server as guarded_server

API = "/api/v1"
MAX_ITEMS = 100  # a page of full conversations; bigger pages make one slow response instead of many fast ones
MAX_LABELS = 10_000  # a page of (id, label, intervention) rows: ~40 bytes each, so ~0.4 MB per response
MAX_ERRORS = 1_000
FILTER_CACHE = 32  # filtered index lists kept per dataset (label range x needs_human combinations)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FILTERS = {"label_min", "label_max", "needs_human"}
INT = re.compile(r"-?[0-9]{1,18}\Z", re.ASCII)  # 18 digits: past any offset, and int() stays cheap
log = logging.getLogger("csforge.api")
_PNG_LOCK = threading.Lock()  # matplotlib's pyplot state is not thread-safe: one PNG drawn at a time


class ApiError(Exception):
    """An error answered as JSON: {"status", "error", "message", **extra}."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# ---- datasets by name, cached with their filtered index lists --------------------------------
@dataclass
class Entry:
    """A loaded dataset plus what the service derives from it once per file version."""

    key: str
    ds: data.ConversationDataset
    path: Path
    stamp: tuple  # (size, mtime_ns) of the file when loaded: a change reloads the dataset
    labels: list[float]
    interventions: list[int]
    ids: list[str]
    derived: dict = field(default_factory=dict)  # stats, figures: computed on first request
    filters: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards `filters` (held for microseconds)
    derive_lock: threading.RLock = field(default_factory=threading.RLock)  # held while a figure renders (re-entered: png -> figures)

    def indices(self, lo: float | None, hi: float | None, human: bool | None) -> list[int] | range:
        """Indices matching a label range (inclusive) and needs-human filter; cached (LRU)."""
        if lo is None and hi is None and human is None:
            return range(len(self.labels))
        key = (lo, hi, human)
        with self.lock:
            if key in self.filters:
                self.filters.move_to_end(key)
                return self.filters[key]
        found = data.filter_indices(self.ds, -math.inf if lo is None else lo, math.inf if hi is None else hi,
                                    needs_human=human)
        with self.lock:
            self.filters[key] = found
            while len(self.filters) > FILTER_CACHE:
                self.filters.popitem(last=False)
        return found

    def once(self, what: str, compute) -> Any:
        """A derived value (stats, figures) computed once per file version, one thread at a time."""
        if what not in self.derived:
            with self.derive_lock:
                if what not in self.derived:
                    self.derived[what] = compute()
        return self.derived[what]


class Catalog:
    """Resolves "customer/dataset" names to loaded datasets; one os.stat per request when cached."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._lock = threading.Lock()

    def cached(self, customer: str, name: str) -> Entry | None:
        """The loaded dataset if its file is unchanged; None otherwise (no discovery, no loading)."""
        entry = self._entries.get((customer, name))
        return entry if entry is not None and _stamp(entry.path) == entry.stamp else None

    def get(self, customer: str, name: str) -> Entry:
        entry = self.cached(customer, name)
        if entry is not None:
            return entry
        spec = self.spec(customer, name)
        with self._lock:  # one load per dataset at a time; other datasets keep being served from cache
            entry = self._entries.get((customer, name))
            stamp = _stamp(spec.path)
            if stamp is None:
                raise ApiError(404, f"dataset {spec.key} is declared but its file is missing on the server")
            if entry is None or entry.stamp != stamp or entry.path != spec.path:
                ds = data.load_dataset(spec.key)
                entry = Entry(spec.key, ds, spec.path, stamp, ds.labels, ds.interventions, ds.ids)
                self._entries[(customer, name)] = entry
            return entry

    @staticmethod
    def spec(customer: str, name: str) -> data.DatasetSpec:
        """The spec of a known dataset, or a 404 that lists the known customers or datasets."""
        try:
            check_shape("customer", customer)
            check_shape("dataset", name)
        except BadName as exc:
            raise ApiError(exc.status, str(exc)) from None
        try:
            found = data.get_customer(customer)
        except data.UnknownName as exc:
            raise ApiError(404, str(exc), known=[c.name for c in data.list_customers()]) from None
        specs = found.datasets()
        if name not in specs:
            raise ApiError(404, f"unknown dataset {customer}/{name}; datasets of {customer}: "
                                f"{', '.join(specs) or 'none'}", known=list(specs))
        return specs[name]


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# ---- query parameters --------------------------------------------------------------------------
def _params(allowed: set[str]) -> dict[str, str]:
    """The query parameters as a plain dict (first value of each); unknown names are a 400, so typos show."""
    if not request.query_string:  # the common case: skip parsing
        return {}
    args = request.args
    unknown = sorted(set(args) - allowed)
    if unknown:
        named = ", ".join(n if len(n) <= 40 else clip(n, 40) for n in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ApiError(400, f"unknown parameter(s) {named}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return {name: args[name] for name in args}


def _int(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    value = _ascii_int(raw)
    if value is None:
        raise ApiError(400, f"{name} must be an integer, got {clip(raw)}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(params: dict, name: str) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw) if raw.isascii() and len(raw) <= 40 else None  # full-width digits are not numbers here
    except ValueError:
        value = None
    if value is None:
        raise ApiError(400, f"{name} must be a number, got {clip(raw)}")
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"{name} must be between 0 and 1, got {clip(raw)}")
    return value


def _bool(params: dict, name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.lower())
    if value is None:
        raise ApiError(400, f"{name} must be true or false, got {clip(raw)}")
    return value


def _filters(params: dict) -> tuple[float | None, float | None, bool | None]:
    lo, hi = _float(params, "label_min"), _float(params, "label_max")
    if lo is not None and hi is not None and lo > hi:
        raise ApiError(400, f"label_min ({lo}) is greater than label_max ({hi})")
    return lo, hi, _bool(params, "needs_human")


def _ascii_int(raw: str) -> int | None:
    """int() of ASCII digits only: int() also takes full-width and other Unicode digits, and 4,000+ digit strings."""
    return int(raw) if INT.match(raw) else None


def _index(entry: Entry, raw: str) -> int:
    i = _ascii_int(raw)
    if i is None:
        raise ApiError(400, f"index must be an integer, got {clip(raw)}")
    n = len(entry.labels)
    if not 0 <= i < n:
        raise ApiError(404, f"index {i} out of range: {entry.key} has {n} conversations (0..{n - 1})", length=n)
    return i


# ---- responses ------------------------------------------------------------------------------------
JSON = "application/json; charset=utf-8"


def _dumps(obj: Any) -> bytes:
    """UTF-8 JSON that keeps Chinese readable (no \\u escapes); compact, as clients are programs."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_dumps(obj), status=status, content_type=JSON)


def _item(entry: Entry, i: int, with_context: bool) -> dict:
    sample = entry.ds[i]
    item = {"index": i, "id": sample.id, "dialog": sample.dialog, "label": sample.label,
            "human_intervention_idx": sample.human_intervention_idx}
    if with_context:
        item["context"] = sample.context
    return item


def _page(total: int, offset: int, limit: int, **rows: Any) -> dict:
    return {"total": total, "offset": offset, "limit": limit, **rows}


def _stats(entry: Entry) -> dict:
    df = entry.ds.stats()
    columns = [c for c in ("turns", "chars", "tokens", "label", "intervention_rel") if c in df]
    quantiles = {}
    for col in columns:
        values = df[col].dropna()
        quantiles[col] = {f"p{round(q * 100)}": (None if values.empty else float(values.quantile(q)))
                          for q in QUANTILES}
    return {"dataset": entry.key, "summary": entry.ds.summary(), "quantiles": quantiles}


def _figures(entry: Entry) -> dict:
    return entry.once("figures", lambda: data.visualise(entry.ds))


# ---- the app ---------------------------------------------------------------------------------------
def create_app(catalog: Catalog | None = None, *, fast_items: bool = True) -> Flask:
    """The Flask app of the data service (waitress serves it; tests use its test client).

    fast_items: answer plain item requests on loaded datasets without Flask's per-request
    machinery (see FastItems); False serves every request through Flask routing (the bench's baseline).
    """
    app = Flask(__name__)
    app.json.ensure_ascii = False  # any jsonify() keeps Chinese readable too
    app.url_map.merge_slashes = False  # "datasets//tmp/x" is a 404 JSON, not a redirect to "datasets/tmp/x"
    cat = catalog or Catalog()
    ds_url = API + "/datasets/<customer>/<name>"

    @app.get(API)
    def index():
        return _json({"service": "csforge data", "endpoints": sorted(
            str(r.rule) for r in app.url_map.iter_rules() if str(r.rule).startswith(API))})

    @app.get(API + "/customers")
    def customers():
        _params(set())
        out = []
        for c in data.list_customers():
            sets = [{"name": s.name, "key": s.key, "available": s.available,
                     "url": f"{API}/datasets/{s.key}"} for s in c.datasets().values()]
            out.append({"name": c.name, "title": c.title, "language": c.language,
                        "good_threshold": c.threshold, "datasets": sets})
        return _json({"customers": out, "errors": data.customer_errors()})

    @app.get(ds_url)
    def dataset_info(customer: str, name: str):
        _params(set())
        entry = cat.get(customer, name)
        return _json({"key": entry.key, "customer": customer, "name": name, "length": len(entry.labels),
                      "good_threshold": entry.ds.good_threshold, "summary": entry.ds.summary()})

    @app.get(ds_url + "/items/<i>")
    def item(customer: str, name: str, i: str):
        params = _params({"context"})
        entry = cat.get(customer, name)
        return _json(_item(entry, _index(entry, i), bool(_bool(params, "context"))))

    @app.get(ds_url + "/items/<i>/context")
    def context(customer: str, name: str, i: str):
        _params(set())
        entry = cat.get(customer, name)
        i = _index(entry, i)
        return _json({"index": i, "id": entry.ids[i], "context": entry.ds.get_context(i)})

    @app.get(ds_url + "/items")
    def items(customer: str, name: str):
        params = _params({"offset", "limit", "context"} | FILTERS)
        entry = cat.get(customer, name)
        offset, limit = _int(params, "offset", 0, 0, 2**31), _int(params, "limit", 20, 1, MAX_ITEMS)
        with_context, found = bool(_bool(params, "context")), entry.indices(*_filters(params))
        rows = [_item(entry, i, with_context) for i in found[offset:offset + limit]]
        return _json(_page(len(found), offset, limit, items=rows))

    @app.get(ds_url + "/labels")
    def labels(customer: str, name: str):
        params = _params({"offset", "limit"} | FILTERS)
        entry = cat.get(customer, name)
        offset, limit = _int(params, "offset", 0, 0, 2**31), _int(params, "limit", 1000, 1, MAX_LABELS)
        found = entry.indices(*_filters(params))
        chosen = list(found[offset:offset + limit])
        return _json(_page(len(found), offset, limit, indices=chosen, ids=[entry.ids[i] for i in chosen],
                           labels=[entry.labels[i] for i in chosen],
                           interventions=[entry.interventions[i] for i in chosen]))

    @app.get(ds_url + "/stats")
    def stats(customer: str, name: str):
        _params(set())
        entry = cat.get(customer, name)
        return _json(entry.once("stats", lambda: _stats(entry)))

    @app.get(ds_url + "/errors")
    def errors(customer: str, name: str):
        params = _params({"offset", "limit"})
        entry = cat.get(customer, name)
        offset, limit = _int(params, "offset", 0, 0, 2**31), _int(params, "limit", 100, 1, MAX_ERRORS)
        rows = [{"file": Path(e.file).name, "where": e.where, "reason": e.reason}  # no server paths
                for e in entry.ds.errors[offset:offset + limit]]
        return _json(_page(len(entry.ds.errors), offset, limit, errors=rows))

    @app.get(ds_url + "/figures.png")
    def figures_png(customer: str, name: str):
        from core.plots import export_png

        _params(set())
        entry = cat.get(customer, name)
        def draw() -> bytes:
            with _PNG_LOCK:
                return export_png(_figures(entry), None)

        png = entry.once("png", draw)
        return Response(png, mimetype="image/png")

    @app.get(ds_url + "/figures.html")
    def figures_html(customer: str, name: str):
        from core.plots import export_html

        _params(set())
        entry = cat.get(customer, name)
        html = entry.once("html", lambda: export_html(_figures(entry), None, title=f"{entry.key} distributions"))
        return Response(html, mimetype="text/html")

    _register_errors(app)
    if fast_items:
        app.wsgi_app = FastItems(app.wsgi_app, cat)
    app.wsgi_app = TokenGate(app.wsgi_app, _error_bytes, open_paths=(API, API + "/"))
    return app


class FastItems:
    """WSGI fast path for `GET .../items/<i>` (and `?context=true`) on an already loaded dataset.

    The item request is the hot path (a DataLoader makes one per sample). Flask's request
    context, routing and Response objects cost 2-4x the work of reading and encoding the item
    itself, so this answers it directly with the same `_item` and `_dumps` as the Flask route.
    Anything else goes to the Flask app, which answers it the regular way: other paths or
    parameters, a dataset not loaded yet or whose file changed, an index out of range, an error.
    """

    PATH = re.compile(re.escape(API) + r"/datasets/([\w.-]+)/([\w.-]+)/items/([0-9]{1,12})\Z", re.ASCII)
    QUERIES = {"": False, "context=true": True}

    def __init__(self, app, catalog: Catalog):
        self.app, self.catalog = app, catalog

    def __call__(self, environ: dict, start_response):
        match = self.PATH.match(environ.get("PATH_INFO", ""))
        with_context = self.QUERIES.get(environ.get("QUERY_STRING", ""))
        if match and with_context is not None and environ.get("REQUEST_METHOD") == "GET":
            entry, i = self.catalog.cached(match[1], match[2]), int(match[3])
            if entry is not None and i < len(entry.labels):
                try:
                    body = _dumps(_item(entry, i, with_context))
                except Exception:  # noqa: BLE001 - the Flask route below answers (and logs) it
                    pass
                else:
                    start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(body)))])
                    return [body]
        return self.app(environ, start_response)


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _error(exc.status, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # unknown routes (e.g. an encoded "/" in a name), wrong methods
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # the details (file paths, values) go to the server log only
        log.exception("unhandled error on %s", request.path[:200])
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def _error_bytes(status: int, message: str) -> bytes:
    from werkzeug.http import HTTP_STATUS_CODES

    return _dumps({"status": status, "error": HTTP_STATUS_CODES.get(status, "Error"), "message": message})


def _error(status: int, message: str, **extra: Any) -> Response:
    from werkzeug.http import HTTP_STATUS_CODES

    return _json({"status": status, "error": HTTP_STATUS_CODES.get(status, "Error"), "message": message, **extra},
                 status)


def make_server(app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> Any:
    """waitress for the data service; past 100 open connections a new client gets 503 + Retry-After."""
    return guarded_server(app, host=host, port=port, threads=threads,
                          busy=_error_bytes(503, "data service busy: too many open connections; retry later"),
                          max_request_body_size=65536)  # no route reads a body


# ---- serving -----------------------------------------------------------------------------------------
class BackgroundServer:
    """The service on a waitress thread, for tests and notebooks: `with BackgroundServer() as srv: srv.url`."""

    def __init__(self, app: Flask | None = None, host: str = "127.0.0.1", port: int = 0, threads: int = 4,
                 server: Any = None):
        self._server = server or make_server(app or create_app(), host=host, port=port, threads=threads)
        self.url = f"http://{host}:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._server.run, name="csforge-api", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket from inside the server loop (so it exits), then stop the workers."""
        from waitress import wasyncore

        server = self._server
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
        self._thread.join(timeout=5)
        server.task_dispatcher.shutdown()


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core.redact import install_stream_filter

    parser = argparse.ArgumentParser(prog="python -m core.api", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (printed on start)")
    parser.add_argument("--threads", type=positive, default=8,
                        help="worker threads; 8 keeps 16 keep-alive clients busy without GIL thrash")
    args = parser.parse_args(argv)
    install_stream_filter()  # log lines are redacted before they reach the terminal or a file
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "queue depth" is normal with more clients than threads
    server = make_server(create_app(), host=args.host, port=args.port, threads=args.threads)
    if exposure_warning(args.host):
        print(exposure_warning(args.host), file=sys.stderr)
    print(f"serving on http://{args.host}:{server.effective_port}{API}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
