"""A torch Dataset over the CSForge data service, so training can consume a dataset over HTTP.

    python -m core.api --port 5000 &                      # on the machine that has the data
    >>> from core.remote import RemoteDataset
    >>> ds = RemoteDataset("http://127.0.0.1:5000", "shop_zh/demo")
    >>> len(ds), ds[0].label, ds.get_context(0)
    >>> DataLoader(ds, batch_size=8, collate_fn=list, num_workers=2)

Same interface as `ConversationDataset` for training consumers: `len`, `ds[i]` -> `Sample`,
`get_context(i)`, `labels`, `interventions`, `ids`, `good_threshold`, `summary()`, `errors`.
Labels, interventions and ids are fetched once in pages and cached; each item is one request.
The length is the server's at construction time: a dataset rewritten on the server meanwhile
can shift items, as it would for a local dataset re-read from a changed file.
"""
from __future__ import annotations

import os
from typing import Any, Iterator
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from torch.utils.data import Dataset
from urllib3.util.retry import Retry

from core.records import RecordError, Sample
from core.redact import redact

API = "/api/v1"
PAGE = 10_000  # the service's largest page of labels (core.api.MAX_LABELS)


class RemoteDataError(RuntimeError):
    """The data service answered with an error or could not be reached; names the URL and the reason."""


class RemoteDataset(Dataset):
    """`ConversationDataset`'s interface over `python -m core.api`; name is "customer/dataset"."""

    def __init__(self, url: str, name: str, *, timeout: float | tuple[float, float] = (3.05, 30.0),
                 retries: int = 3):
        customer, sep, dataset = name.partition("/")
        if not (customer and sep and dataset) or "/" in dataset:
            raise ValueError(f"dataset name must be 'customer/dataset', got {name!r}")
        self.url, self.name = url.rstrip("/"), name
        self.timeout, self.retries = timeout, retries  # (connect, read) seconds; retries on connection errors and 502-504
        self._base = f"{self.url}{API}/datasets/{quote(customer, safe='')}/{quote(dataset, safe='')}"
        self._session: requests.Session | None = None
        self._pid = -1
        self._columns: dict[str, list] | None = None
        info = self._get("")
        self._len: int = info["length"]
        self.good_threshold: float = info["good_threshold"]

    # ---- torch Dataset interface ---------------------------------------------------------------
    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> Sample:
        item = self._get(f"/items/{self._index(i)}", context="true")
        return Sample(id=item["id"], dialog=item["dialog"], label=item["label"],
                      human_intervention_idx=item["human_intervention_idx"], context=item["context"])

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def get_context(self, i: int) -> dict:
        return self._get(f"/items/{self._index(i)}/context")["context"]

    @property
    def labels(self) -> list[float]:
        return list(self._index_columns()["labels"])

    @property
    def interventions(self) -> list[int]:
        return list(self._index_columns()["interventions"])

    @property
    def ids(self) -> list[str]:
        return list(self._index_columns()["ids"])

    def summary(self) -> dict:
        return self._get("")["summary"]

    @property
    def errors(self) -> list[RecordError]:
        """Bad records the server reported while loading (file names only, no server paths)."""
        out, offset = [], 0
        while True:
            page = self._get("/errors", offset=offset, limit=1000)
            out += [RecordError(e["file"], e["where"], e["reason"]) for e in page["errors"]]
            offset += len(page["errors"])
            if not page["errors"] or offset >= page["total"]:
                return out

    def __repr__(self) -> str:
        return f"RemoteDataset({self.url!r}, {self.name!r}, len={self._len})"

    # ---- HTTP ------------------------------------------------------------------------------------------
    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} ({n} conversations at {self.url})")
        return i % n

    def _index_columns(self) -> dict[str, list]:
        """ids, labels and interventions of every item, fetched once in pages of PAGE rows."""
        if self._columns is None:
            cols: dict[str, list] = {"ids": [], "labels": [], "interventions": []}
            while len(cols["ids"]) < self._len:
                page = self._get("/labels", offset=len(cols["ids"]), limit=PAGE)
                if page["total"] != self._len or not page["ids"]:
                    raise RemoteDataError(f"{self._base}: dataset changed on the server while reading "
                                          f"(had {self._len} conversations, now {page['total']}); "
                                          f"create the RemoteDataset again")
                for key in cols:
                    cols[key] += page[key]
            self._columns = cols
        return self._columns

    @property
    def session(self) -> requests.Session:
        """One keep-alive session per process (DataLoader workers fork and get their own)."""
        if self._session is None or self._pid != os.getpid():
            session = requests.Session()
            if os.environ.get("CSFORGE_SERVE_TOKEN"):  # the service's optional bearer token (core.guard)
                session.headers["Authorization"] = f"Bearer {os.environ['CSFORGE_SERVE_TOKEN']}"
            retry = Retry(total=self.retries, backoff_factor=0.2, status_forcelist=(502, 503, 504),
                          allowed_methods=("GET",), raise_on_status=False)
            session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
            session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
            self._session, self._pid = session, os.getpid()
        return self._session

    def _get(self, path: str, **params: Any) -> Any:
        url = self._base + path
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RemoteDataError(redact(f"{url}: cannot reach the data service: {exc}")) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else resp.text[:200]
            raise RemoteDataError(redact(f"{resp.url}: HTTP {resp.status_code}: {message}"))
        return body

    def __getstate__(self) -> dict:  # sessions do not cross process boundaries (DataLoader workers)
        state = dict(self.__dict__)
        state["_session"], state["_pid"] = None, -1
        return state
