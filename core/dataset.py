"""Customer conversation data: one typed Conversation per raw record, served as a torch Dataset.

Each client gets a subclass of `ConversationDataset` in `customers/<name>/dataset.py` that
says how its raw records map onto a `Conversation` (`parse`) and states its rules:
`quality` (the label in [0, 1]; the docstring gives the criteria), `intervention` (index of
the first message where a human must take over, -1 for none) and `context`.

    python -m core.dataset list                       # customers and their datasets
    python -m core.dataset check shop_zh/demo         # load, report bad records, print stats
    python -m core.dataset plot shop_zh/demo --html out.html --png out.png
    python -m core.dataset new outfit_en --language en  # scaffold customers/outfit_en/ and data/outfit_en/
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import operator
import os
import pickle
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Iterator, TypeVar

from core.paths import CUSTOMERS_DIR, DATA_DIR, ROOT, home_dir
from core.records import (ROLES, BadRecord, Conversation, RecordError, Sample, UnknownName, check_json,
                          json_list, jsonl_records, printable, validate)

if TYPE_CHECKING:  # heavy imports stay out of `import core.dataset`
    import pandas as pd

__all__ = ["ROLES", "BadRecord", "Conversation", "ConversationDataset", "CustomerError", "RecordError", "Sample",
           "UnknownName", "approx_tokens", "dataset_spec", "default_dataset", "get_customer", "list_customers",
           "load_dataset", "overview"]
CACHE_VERSION = 2
_CJK_RUNS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")
_T_co = TypeVar("_T_co", covariant=True)


def approx_tokens(text: str) -> int:
    """Token estimate that handles Chinese: one token per CJK character, one per 4 other characters.

    Close to what Llama-3, Qwen and GPT-4o tokenizers give for mixed Chinese/English chat text
    (CJK: 0.7-1.5 tokens a character; English: about 4 characters a token); core.pricing uses
    the model's real tokenizer where it has one.
    """
    cjk = sum(map(len, _CJK_RUNS.findall(text)))
    return cjk + (len(text) - cjk + 3) // 4


class _TorchDatasetBase(Generic[_T_co]):
    """Stands in for torch.utils.data.Dataset until torch is imported (see `_use_torch_base`)."""


def _use_torch_base(torch_data: Any) -> None:
    """Make torch's Dataset the base of ConversationDataset, and so of every customer class.

    Done when torch.utils.data is imported (by anyone, see `_TorchDataWatcher`), never by this
    module: pages build datasets from the label cache on each render and torch takes ~2 s to
    import. Changing `__bases__` updates the MRO of the classes and instances that exist, so
    from then on isinstance(ds, torch.utils.data.Dataset) holds for every dataset.
    """
    if ConversationDataset.__bases__ == (_TorchDatasetBase,):
        ConversationDataset.__bases__ = (torch_data.Dataset,)


class _TorchDataWatcher:
    """Import hook: switches the base right after torch.utils.data has been executed."""

    def find_spec(self, name: str, path: Any, target: Any = None):
        if name != "torch.utils.data":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_switch(module):
            exec_module(module)
            _use_torch_base(module)

        spec.loader.exec_module = exec_then_switch
        return spec


class ConversationDataset(_TorchDatasetBase):
    """Base class: reads json/jsonl files, cleans records into Conversations, caches the labels.

    Subclasses override only their rules. Class attributes:
      good_threshold   a conversation whose label is above it counts as good
      handoff_message  what the agent says when it hands over to a human
      language         main language of the client's conversations ("zh", "en")
      datasets         named datasets: {"demo": {"path": "data/x.jsonl", **options}}; files in
                       data/<customer>/ are found too, named by their stem
      rule_files       files the rules read (keyword lists, a knowledge base), relative to the
                       module's folder; their content goes into the label cache key; read them
                       with `self.rule_data(name)`

    Any exception raised while reading, parsing, filtering or labelling one record makes that
    record a bad record (`file:line N: reason`); the other records load.
    """

    good_threshold: float = 0.5
    handoff_message: str = "I'll transfer you to a human colleague now."
    language: str = "en"
    title: str = ""
    datasets: dict[str, dict] = {}
    rule_files: list[str] = []

    def __init__(self, path: str | Path | list, *, strict: bool = False, use_cache: bool = True,
                 **options: Any):
        paths = path if isinstance(path, (list, tuple)) else [path]
        self.paths = [Path(p).resolve() for p in paths]
        self.strict = strict
        self.options = options
        self.errors: list[RecordError] = []
        self.skipped = 0  # records left out on purpose by `include` (e.g. another company)
        self._fds: dict[int, int] = {}
        self._json_records: dict[int, list] = {}
        self._lock = threading.Lock()
        self._load(use_cache)

    # ---- rules a customer overrides -------------------------------------------------------
    def parse(self, record: Any) -> Conversation:
        """Map one raw record onto a Conversation; raise ValueError(reason) if it is bad.

        The default accepts the canonical form: {"id", "messages", "context", "meta"}.
        """
        if not isinstance(record, dict):
            raise ValueError(f"record is a {type(record).__name__}, expected an object")
        if "messages" not in record:
            raise ValueError("missing field 'messages'")
        return Conversation(id=str(record.get("id", "")), messages=record["messages"],
                            context=record.get("context") or {}, meta=record.get("meta") or {})

    def include(self, conv: Conversation) -> bool:
        """Whether a valid conversation belongs in this dataset (filters such as one company)."""
        return True

    def quality(self, conv: Conversation) -> float:
        """Label in [0, 1]. Default: share of user turns that got an agent reply."""
        users = sum(m["role"] == "user" for m in conv.messages)
        agents = sum(m["role"] == "assistant" for m in conv.messages)
        return min(1.0, agents / users) if users else 0.0

    def intervention(self, conv: Conversation) -> int:
        """Index of the first message where a human must take over; -1 for none."""
        return -1

    def context(self, conv: Conversation) -> dict:
        """What the agent knew besides the dialog."""
        return conv.context

    def rule_data(self, name: str) -> Any:
        """A file declared in `rule_files`, parsed (.json, .yaml/.yml; anything else as text).

        Read once per dataset instance, so a rule file edited while a console runs is picked up
        with the recomputed labels (load_dataset builds a new instance when a rule file changes),
        never mixed with labels computed from the old one.
        """
        if name not in type(self).rule_files:
            raise ValueError(f"{name!r} is not in {type(self).__name__}.rule_files; declare it there so that "
                             f"editing it recomputes the labels")
        cache = self.__dict__.setdefault("_rule_data", {})
        if name not in cache:
            path = dict(zip(type(self).rule_files, rule_file_paths(type(self))))[name]
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                cache[name] = json.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                import yaml

                cache[name] = yaml.safe_load(text)
            else:
                cache[name] = text
        return cache[name]

    # ---- torch Dataset interface -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> Sample:
        conv = self.conversation(i)
        return Sample(id=conv.id, dialog=conv.messages, label=self._labels[i],
                      human_intervention_idx=self._interventions[i], context=self.context(conv))

    def get_context(self, i: int) -> dict:
        return self.context(self.conversation(i))

    def conversation(self, i: int) -> Conversation:
        """The i-th valid conversation, re-read from its file (only offsets stay in memory)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} conversations")
        file_idx, locator, length = self._locators[i]
        raw = self._read(file_idx, locator, length)
        return self._clean(raw, self.paths[file_idx], "")

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def iter_conversations(self) -> Iterator[Conversation]:
        return (self.conversation(i) for i in range(len(self)))

    @property
    def labels(self) -> list[float]:
        return list(self._labels)

    @property
    def interventions(self) -> list[int]:
        return list(self._interventions)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def stats(self) -> "pd.DataFrame":
        """One row per conversation: turns, characters, tokens, label, intervention index and position."""
        import pandas as pd

        df = pd.DataFrame(self._columns)
        df.insert(0, "id", self._ids)
        df["label"] = self._labels
        df["good"] = df["label"] > self.good_threshold
        df["intervention"] = self._interventions
        df["needs_human"] = df["intervention"] >= 0
        df["intervention_rel"] = (df["intervention"] / df["turns"].clip(lower=1)).where(df["needs_human"])
        return df

    def summary(self) -> dict:
        """Headline numbers for the home page, the data service and reports."""
        n = len(self)
        good = sum(label > self.good_threshold for label in self._labels)
        human = sum(idx >= 0 for idx in self._interventions)
        return {"conversations": n, "bad_records": len(self.errors), "skipped": self.skipped,
                "good_share": good / n if n else 0.0, "needs_human_share": human / n if n else 0.0,
                "mean_label": sum(self._labels) / n if n else 0.0,
                "tokens": sum(self._columns["tokens"]), "threshold": self.good_threshold}

    # ---- loading -----------------------------------------------------------------------------
    def _clean(self, raw: Any, path: Path, where: str) -> Conversation:
        conv = self.parse(raw)
        validate(conv)
        conv.meta.setdefault("source", f"{path.name}:{where}" if where else path.name)
        return conv

    def _load(self, use_cache: bool) -> None:
        cache_file = home_dir("cache", "datasets") / f"{self._cache_key()}.pkl"
        if use_cache and cache_file.exists():
            try:
                snapshot = pickle.loads(cache_file.read_bytes())
            except Exception:  # a truncated or foreign cache file is rebuilt, never trusted
                snapshot = None
            if snapshot is not None:
                self._restore(snapshot)
                if self.strict and self.errors:
                    raise BadRecord(str(self.errors[0]))
                return
        self._ids, self._labels, self._interventions, self._locators = [], [], [], []
        self._columns: dict[str, list] = {k: [] for k in ("turns", "user_turns", "agent_turns", "chars", "tokens")}
        for file_idx, path in enumerate(self.paths):
            try:
                for where, locator, length, raw in self._records(file_idx, path):
                    self._add(file_idx, path, where, locator, length, raw)
            except OSError as exc:  # a folder, no permission, a disk error: this file's records stop here
                self._bad(RecordError(str(path), "file", f"cannot read: {exc.strerror or exc}"))
        if use_cache:
            _atomic_write(cache_file, pickle.dumps(self._snapshot()))

    def _add(self, file_idx: int, path: Path, where: str, locator: int, length: int, raw: Any) -> None:
        if isinstance(raw, RecordError):
            return self._bad(raw)
        try:
            labelled = self._label(raw, path, where)
        except ValueError as exc:
            return self._bad(RecordError(str(path), where, str(exc)))
        if labelled is None:
            self.skipped += 1
            return
        conv, label, idx = labelled
        texts = [m["content"] for m in conv.messages]
        self._ids.append(conv.id or f"{path.stem}-{where.split()[-1]}")
        self._labels.append(label)
        self._interventions.append(idx)
        self._locators.append((file_idx, locator, length))
        cols = self._columns
        cols["turns"].append(len(conv.messages))
        cols["user_turns"].append(sum(m["role"] == "user" for m in conv.messages))
        cols["agent_turns"].append(sum(m["role"] == "assistant" for m in conv.messages))
        cols["chars"].append(sum(map(len, texts)))
        cols["tokens"].append(approx_tokens("".join(texts)))

    def _label(self, raw: Any, path: Path, where: str) -> tuple[Conversation, float, int] | None:
        """(conversation, label, intervention index), None if `include` leaves it out, or ValueError(reason).

        Runs every hook the record will meet when served (context too), so a record that loads
        can always be served: no exception, every value valid JSON.
        """
        stage = "parse"
        try:
            conv = self._clean(raw, path, where)
            stage = "include"
            if not self.include(conv):
                return None
            stage = "quality"
            label = float(self.quality(conv))
            stage = "intervention"
            idx = operator.index(self.intervention(conv))
            stage = "context"
            context = self.context(conv)
        except Exception as exc:  # whatever a client's code raises stays this record's error
            raise ValueError(_hook_reason(stage, exc)) from None
        if not (math.isfinite(label) and 0.0 <= label <= 1.0):
            raise ValueError(f"quality() returned {label}, outside [0, 1]")
        if not -1 <= idx < len(conv.messages):
            raise ValueError(f"intervention() returned {idx}; expected -1 or a message index "
                             f"0..{len(conv.messages) - 1}")
        if not isinstance(context, dict):
            raise ValueError(f"context() returned a {type(context).__name__}, expected an object")
        check_json({"id": conv.id, "messages": conv.messages, "context": context}, "conversation")
        return conv, label, idx

    def _bad(self, error: RecordError) -> None:
        if self.strict:
            raise BadRecord(str(error))
        self.errors.append(error)

    def _records(self, file_idx: int, path: Path) -> Iterator[tuple[str, int, int, Any]]:
        """(where, locator, length, raw record or RecordError) for every record of a file."""
        if not path.exists():
            yield "file", -1, 0, RecordError(str(path), "file", "file not found")
        elif path.suffix == ".jsonl":
            yield from jsonl_records(path)
        elif path.suffix == ".json":
            records = json_list(path)
            if isinstance(records, RecordError):
                yield "file", -1, 0, records
                return
            self._json_records[file_idx] = records
            for i, raw in enumerate(records):
                yield f"index {i}", i, 0, raw
        else:
            yield "file", -1, 0, RecordError(str(path), "file", f"unsupported file type {path.suffix!r} (use .json or .jsonl)")

    def _read(self, file_idx: int, locator: int, length: int) -> Any:
        path = self.paths[file_idx]
        if path.suffix == ".json":
            if file_idx not in self._json_records:
                with self._lock:
                    self._json_records[file_idx] = json_list(path)
            return self._json_records[file_idx][locator]
        if file_idx not in self._fds:
            with self._lock:
                self._fds.setdefault(file_idx, os.open(path, os.O_RDONLY))
        return json.loads(os.pread(self._fds[file_idx], length, locator))

    # ---- cache -------------------------------------------------------------------------------
    def _cache_key(self) -> str:
        """Changes when a file, the class's rules or its options change."""
        parts = [CACHE_VERSION, type(self).__module__, type(self).__qualname__, _rules_hash(type(self)),
                 sorted((k, repr(v)) for k, v in self.options.items())]
        for path in self.paths:
            st = path.stat() if path.exists() else None
            parts.append((str(path), st and st.st_size, st and st.st_mtime_ns))
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:20]

    def _snapshot(self) -> dict:
        return {"ids": self._ids, "labels": self._labels, "interventions": self._interventions,
                "locators": self._locators, "columns": self._columns, "errors": self.errors,
                "skipped": self.skipped}

    def _restore(self, snap: dict) -> None:
        self._ids, self._labels = snap["ids"], snap["labels"]
        self._interventions, self._locators = snap["interventions"], snap["locators"]
        self._columns, self.errors, self.skipped = snap["columns"], snap["errors"], snap["skipped"]

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


def _hook_reason(stage: str, exc: Exception) -> str:
    """The bad-record reason for an exception raised by a hook (the contract is in README)."""
    if stage == "parse" and isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        return str(exc)  # the documented way to reject a record: raise ValueError(reason)
    if stage == "parse" and isinstance(exc, KeyError):
        return f"missing field {exc.args[0] if exc.args else ''}"
    return f"{stage}() raised {type(exc).__name__}: {exc}"


def _rules_hash(cls: type) -> str:
    """Hash of the files defining the class and its bases, and of the files it declares in
    `rule_files`, so editing a rule, a keyword list, a helper function in a customer's module or
    a knowledge base the rules read invalidates the cached labels."""
    digest = hashlib.sha1()
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("builtins", "torch", "typing"):
            continue
        try:
            source = inspect.getsourcefile(klass)
        except TypeError:
            source = None
        if source in seen:
            continue
        seen.add(source)
        try:
            digest.update(Path(source).read_bytes())
        except (OSError, TypeError):
            digest.update(klass.__qualname__.encode())
    for path in rule_file_paths(cls):
        digest.update(str(path).encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()[:12]


def rule_file_paths(cls: type) -> list[Path]:
    """The files a class declares in `rule_files`, resolved against its module's folder."""
    try:
        folder = Path(inspect.getsourcefile(cls)).parent
    except TypeError:
        folder = Path.cwd()
    return [(folder / name).resolve() for name in getattr(cls, "rule_files", [])]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---- customers -------------------------------------------------------------------------------
@dataclass
class DatasetSpec:
    """A named dataset of a customer: where its files are and the options for its class."""

    customer: str
    name: str
    path: Path
    options: dict

    @property
    def key(self) -> str:
        return f"{self.customer}/{self.name}"

    @property
    def available(self) -> bool:
        return self.path.exists()


@dataclass
class Customer:
    """One client: its folder, Dataset class and named datasets."""

    name: str
    dir: Path
    dataset_class: type[ConversationDataset]

    @property
    def title(self) -> str:
        return self.dataset_class.title or self.name

    @property
    def language(self) -> str:
        return self.dataset_class.language

    @property
    def handoff_message(self) -> str:
        return self.dataset_class.handoff_message

    @property
    def threshold(self) -> float:
        return self.dataset_class.good_threshold

    @property
    def rules(self) -> str:
        return inspect.getdoc(self.dataset_class) or ""

    @property
    def prompt_path(self) -> Path:
        return self.dir / "prompt.md"

    @property
    def scenarios_path(self) -> Path:
        return self.dir / "scenarios.yaml"

    def datasets(self) -> dict[str, DatasetSpec]:
        specs = {}
        folder = DATA_DIR / self.name
        for file in sorted(folder.glob("*.json*")) if folder.is_dir() else []:
            # a symlink that leads out of data/<client>/ is not served (it could name any file)
            if file.suffix in (".json", ".jsonl") and file.resolve().is_relative_to(folder.resolve()):
                specs[file.stem] = DatasetSpec(self.name, file.stem, file, {})
        for name, spec in self.dataset_class.datasets.items():
            if _declaration_error(spec) is None:  # a broken declaration is listed by customer_errors()
                options = {k: v for k, v in spec.items() if k != "path"}
                specs[name] = DatasetSpec(self.name, name, (ROOT / spec["path"]).resolve(), options)
        return specs


class CustomerError(UnknownName):
    """A customer folder whose dataset.py fails to import or defines no dataset class; says why."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # a Python package name: never a path


def list_customers() -> list[Customer]:
    """Every customers/<name>/dataset.py that defines a ConversationDataset subclass."""
    found = (_customer_or_error(folder) for folder in _customer_folders())
    return [c for c in found if isinstance(c, Customer)]


def customer_errors(customer: str | None = None) -> list[str]:
    """Customer folders that cannot be used, with the reason: import errors, no dataset class,
    dataset declarations without a path. `customer`: only that folder's problems."""
    errors = []
    for folder in _customer_folders():
        if customer is not None and folder.name != customer:
            continue
        found = _customer_or_error(folder)
        if isinstance(found, str):
            errors.append(found)
            continue
        for name, spec in found.dataset_class.datasets.items():
            problem = _declaration_error(spec)
            if problem:
                errors.append(f"customers/{found.name}/dataset.py: datasets[{name!r}] {problem}")
    return errors


def get_customer(name: str) -> Customer:
    """The customer of that folder name; UnknownName lists the known ones, CustomerError says why
    an existing folder cannot be used (e.g. its dataset.py raises on import)."""
    folder = CUSTOMERS_DIR / name
    if _NAME.match(name) and (folder / "dataset.py").is_file():
        found = _customer_or_error(folder)
        if isinstance(found, str):
            raise CustomerError(f"customer {name!r} cannot be loaded: {found}")
        return found
    known = ", ".join(c.name for c in list_customers()) or "none"
    raise UnknownName(f"unknown customer {name!r}; known customers: {known}")


def default_dataset(customer: str) -> str:
    """Name of the customer's first dataset (its data/<customer>/ files first, then declared ones)."""
    specs = get_customer(customer).datasets()
    if not specs:
        raise UnknownName(f"customer {customer!r} has no dataset: add a file under data/{customer}/ "
                          f"or declare `datasets` in customers/{customer}/dataset.py")
    return next(iter(specs))


def dataset_spec(key: str) -> DatasetSpec:
    """Resolve "customer/dataset" (or just "customer" for its first dataset)."""
    customer_name, _, name = key.partition("/")
    specs = get_customer(customer_name).datasets()
    if not name and specs:
        name = next(iter(specs))
    if name not in specs:
        known = ", ".join(specs) or "none"
        raise UnknownName(f"unknown dataset {key!r}; datasets of {customer_name}: {known}")
    return specs[name]


if "torch.utils.data" in sys.modules:
    _use_torch_base(sys.modules["torch.utils.data"])
elif not any(isinstance(f, _TorchDataWatcher) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchDataWatcher())

_LOADED: dict[tuple, tuple[tuple, ConversationDataset]] = {}
_LOADED_LOCK = threading.Lock()


def load_dataset(key: str, *, strict: bool = False) -> ConversationDataset:
    """Load a named dataset ("shop_zh/demo"); reused in-process until its file or a rule file changes."""
    spec = dataset_spec(key)
    if not spec.available:
        raise FileNotFoundError(f"dataset {spec.key}: file {spec.path} not found")
    cls = get_customer(spec.customer).dataset_class
    stamp = tuple(_stamp(p) for p in [spec.path, *rule_file_paths(cls)])
    with _LOADED_LOCK:
        loaded = _LOADED.get((spec.key, strict))
        if loaded is None or loaded[0] != stamp:  # a changed file replaces the old version
            loaded = _LOADED[(spec.key, strict)] = (stamp, cls(spec.path, strict=strict, **spec.options))
        return loaded[1]


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _customer_folders() -> list[Path]:
    return [d for d in sorted(CUSTOMERS_DIR.iterdir()) if _NAME.match(d.name) and (d / "dataset.py").is_file()]


def _import_customer(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"customers.{name}.dataset")


def _customer_or_error(folder: Path) -> Customer | str:
    """The folder's Customer, or why it is not one (import error, no class)."""
    where = f"customers/{folder.name}/dataset.py"
    try:
        module = _import_customer(folder.name)
    except Exception as exc:  # a client's broken module is reported, never hidden nor fatal
        return f"{where}: import failed: {type(exc).__name__}: {printable(exc)}"
    classes = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and issubclass(obj, ConversationDataset)
               and obj is not ConversationDataset and obj.__module__ == module.__name__]
    if not classes:
        return f"{where}: defines no subclass of core.dataset.ConversationDataset"
    return Customer(folder.name, folder, classes[0])


def _declaration_error(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return f"is a {type(spec).__name__}; expected {{'path': ..., **options}}"
    if not isinstance(spec.get("path"), str):
        return "has no 'path' (a file path relative to the repository)"
    return None


def visualise(ds: ConversationDataset) -> dict:
    """Distribution figures (plotly): length, label with threshold, intervention, label vs length."""
    from core.plots import distribution_figures

    return distribution_figures(ds.stats(), ds.good_threshold)


def overview() -> list[dict]:
    """One row per customer dataset for the home page: counts, good share, share needing a human.

    A dataset that cannot be loaded, or whose every record is bad, gets an `error` naming why.
    """
    rows = []
    for customer in list_customers():
        for spec in customer.datasets().values():
            row = {"customer": customer.name, "dataset": spec.key, "language": customer.language}
            try:
                ds = load_dataset(spec.key)
                row.update(ds.summary())
                if not len(ds) and ds.errors:
                    row["error"] = f"no valid conversation ({len(ds.errors)} bad records); first: {ds.errors[0]}"
            except Exception as exc:  # one client's failure must not take the home page down
                row["error"] = printable(exc if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}")
            rows.append(row)
    return rows


def filter_indices(ds: ConversationDataset, label_min: float = 0.0, label_max: float = 1.0,
                   needs_human: bool | None = None) -> list[int]:
    """Indices of conversations with label in [label_min, label_max] and the wanted handoff state."""
    return [i for i, (label, idx) in enumerate(zip(ds._labels, ds._interventions))
            if label_min <= label <= label_max and (needs_human is None or (idx >= 0) == needs_human)]


def to_jsonl(ds: ConversationDataset, indices: list[int]) -> bytes:
    """The chosen conversations in canonical form with their label and intervention index."""
    lines = []
    for i in indices:
        sample = ds[i]
        record = {"id": sample.id, "messages": sample.dialog, "context": sample.context,
                  "label": sample.label, "human_intervention_idx": sample.human_intervention_idx}
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


# ---- CLI --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.dataset", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="customers and their datasets")
    check = sub.add_parser("check", help="load a dataset, report bad records, print its summary")
    check.add_argument("dataset", help="customer/dataset, e.g. shop_zh/demo")
    check.add_argument("--strict", action="store_true", help="stop at the first bad record")
    plot = sub.add_parser("plot", help="export the distribution figures")
    plot.add_argument("dataset")
    plot.add_argument("--html", help="standalone HTML file to write")
    plot.add_argument("--png", help="PNG file to write")
    new = sub.add_parser("new", help="scaffold a new client: customers/NAME/ and data/NAME/")
    new.add_argument("name", help="folder name: lower-case letters, digits and _, e.g. outfit_en")
    new.add_argument("--language", required=True, choices=("zh", "en"), help="main language of the conversations")
    new.add_argument("--title", help="display name (default: from NAME)")
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except (UnknownName, FileNotFoundError, BadRecord, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_list(args) -> int:
    for customer in list_customers():
        print(f"{customer.name}  ({customer.title}, {customer.language}, good > {customer.threshold:g})")
        for spec in customer.datasets().values():
            state = "" if spec.available else "  [missing file]"
            print(f"  {spec.key:32} {spec.path}{state}")
    for error in customer_errors():
        print(f"error: {error}", file=sys.stderr)
    return 0


def _cmd_check(args) -> int:
    ds = load_dataset(args.dataset, strict=args.strict)
    for error in ds.errors[:50]:
        print(f"bad record: {error}")
    if len(ds.errors) > 50:
        print(f"... and {len(ds.errors) - 50} more bad records")
    print(json.dumps(ds.summary(), indent=2, ensure_ascii=False))
    return 0


def _cmd_plot(args) -> int:
    from core.plots import export_html, export_png

    ds = load_dataset(args.dataset)
    figures = visualise(ds)
    if args.html:
        export_html(figures, args.html, title=f"{args.dataset} distributions")
        print(f"wrote {args.html}")
    if args.png:
        export_png(figures, args.png)
        print(f"wrote {args.png}")
    return 0


def _cmd_new(args) -> int:
    from core.scaffold import new_client, relative

    for path in new_client(args.name, args.language, args.title, customers_dir=CUSTOMERS_DIR, data_dir=DATA_DIR):
        print(f"wrote {relative(path)}")
    print(f"next: python -m core.dataset check {args.name}/example   (README: Adding a client)")
    return 0


_COMMANDS = {"list": _cmd_list, "check": _cmd_check, "plot": _cmd_plot, "new": _cmd_new}

if __name__ == "__main__":
    # Run the imported module's main: customer classes subclass core.dataset's class, not __main__'s.
    from core.dataset import main as _main

    sys.exit(_main())
