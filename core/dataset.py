"""Customer conversation data: one typed Conversation per raw record, served as a torch Dataset.

Each client gets a subclass of `ConversationDataset` in `customers/<name>/dataset.py` that
says how its raw records map onto a `Conversation` (`parse`) and states its rules:
`quality` (the label in [0, 1]; the docstring gives the criteria), `intervention` (index of
the first message where a human must take over, -1 for none) and `context`.

    python -m core.dataset list                       # customers and their datasets
    python -m core.dataset check shop_zh/demo         # load, report bad records, print stats
    python -m core.dataset plot shop_zh/demo --html out.html --png out.png
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import pickle
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from torch.utils.data import Dataset

from core.paths import CUSTOMERS_DIR, DATA_DIR, ROOT, home_dir

if TYPE_CHECKING:  # heavy imports stay out of `import core.dataset`
    import pandas as pd

ROLES = ("system", "user", "assistant", "tool")
CACHE_VERSION = 1
_CJK_RUNS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")


def approx_tokens(text: str) -> int:
    """Token estimate that handles Chinese: one token per CJK character, one per 4 other characters.

    Close to what Llama-3, Qwen and GPT-4o tokenizers give for mixed Chinese/English chat text
    (CJK: 0.7-1.5 tokens a character; English: about 4 characters a token); core.pricing uses
    the model's real tokenizer where it has one.
    """
    cjk = sum(map(len, _CJK_RUNS.findall(text)))
    return cjk + (len(text) - cjk + 3) // 4


@dataclass
class Conversation:
    """The canonical form every customer class produces."""

    id: str
    messages: list[dict]  # OpenAI chat roles: system, user, assistant, tool; each with "content"
    context: dict = field(default_factory=dict)  # tools called + results, user profile, images, scripts
    meta: dict = field(default_factory=dict)  # source file, timestamps, anything else


@dataclass(frozen=True)
class Sample:
    """What `ds[i]` returns: the dialog, its cached label and intervention index, and its context."""

    id: str
    dialog: list[dict]
    label: float
    human_intervention_idx: int
    context: dict


@dataclass(frozen=True)
class RecordError:
    """A raw record that could not become a Conversation."""

    file: str
    where: str  # "line 12" (jsonl), "index 3" (json list) or "file"
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.reason}"


class BadRecord(ValueError):
    """Raised in strict mode on the first bad record; the message names file, record and reason."""


class UnknownName(KeyError):
    """A customer or dataset name that does not exist; the message lists what does."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConversationDataset(Dataset):
    """Base class: reads json/jsonl files, cleans records into Conversations, caches the labels.

    Subclasses override only their rules. Class attributes:
      good_threshold   a conversation whose label is above it counts as good
      handoff_message  what the agent says when it hands over to a human
      language         main language of the client's conversations ("zh", "en")
      datasets         named datasets: {"demo": {"path": "data/x.jsonl", **options}}; files in
                       data/<customer>/ are found too, named by their stem
    """

    good_threshold: float = 0.5
    handoff_message: str = "I'll transfer you to a human colleague now."
    language: str = "en"
    title: str = ""
    datasets: dict[str, dict] = {}

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
        _validate(conv)
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
            for where, locator, length, raw in self._records(file_idx, path):
                self._add(file_idx, path, where, locator, length, raw)
        if use_cache:
            _atomic_write(cache_file, pickle.dumps(self._snapshot()))

    def _add(self, file_idx: int, path: Path, where: str, locator: int, length: int, raw: Any) -> None:
        if isinstance(raw, RecordError):
            return self._bad(raw)
        try:
            conv = self._clean(raw, path, where)
            if not self.include(conv):
                self.skipped += 1
                return
            label, idx = float(self.quality(conv)), int(self.intervention(conv))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            prefix = "missing field " if isinstance(exc, KeyError) else ""
            return self._bad(RecordError(str(path), where, f"{prefix}{reason}"))
        if not 0.0 <= label <= 1.0:
            return self._bad(RecordError(str(path), where, f"quality() returned {label}, outside [0, 1]"))
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

    def _bad(self, error: RecordError) -> None:
        if self.strict:
            raise BadRecord(str(error))
        self.errors.append(error)

    def _records(self, file_idx: int, path: Path) -> Iterator[tuple[str, int, int, Any]]:
        """(where, locator, length, raw record or RecordError) for every record of a file."""
        if not path.exists():
            yield "file", -1, 0, RecordError(str(path), "file", "file not found")
        elif path.suffix == ".jsonl":
            yield from _jsonl_records(path)
        elif path.suffix == ".json":
            records = _json_list(path)
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
                    self._json_records[file_idx] = _json_list(path)
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


# ---- validation and file reading ------------------------------------------------------------
def _validate(conv: Conversation) -> None:
    if not isinstance(conv.messages, list):
        raise ValueError("'messages' is not a list")
    if not any(isinstance(m, dict) and m.get("role") != "system" for m in conv.messages):
        raise ValueError("empty conversation: no user or agent message")
    for n, msg in enumerate(conv.messages):
        if not isinstance(msg, dict):
            raise ValueError(f"message {n} is a {type(msg).__name__}, expected an object")
        if msg.get("role") not in ROLES:
            raise ValueError(f"message {n} has unknown role {msg.get('role')!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(msg.get("content"), str):
            kind = "missing" if "content" not in msg else f"a {type(msg['content']).__name__}"
            raise ValueError(f"message {n} content is {kind}, expected text")
    if not isinstance(conv.context, dict):
        raise ValueError("'context' is not an object")


def _jsonl_records(path: Path) -> Iterator[tuple[str, int, int, Any]]:
    """Stream a .jsonl file line by line, keeping each line's byte offset for random access."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                raw = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raw = RecordError(str(path), where, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            except json.JSONDecodeError as exc:
                raw = RecordError(str(path), where, f"invalid JSON: {exc.msg} (column {exc.colno})")
            yield where, start, len(line), raw


def _json_list(path: Path) -> list | RecordError:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        return RecordError(str(path), "file", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return RecordError(str(path), "file", f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    if not isinstance(data, list):
        return RecordError(str(path), "file", f"expected a JSON list of conversations, got {type(data).__name__}")
    return data


def _rules_hash(cls: type) -> str:
    """Hash of the files defining the class and its bases, so editing a rule, a keyword list or a
    helper function in a customer's module invalidates the cached labels."""
    digest = hashlib.sha1()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("builtins", "torch", "typing"):
            continue
        try:
            digest.update(Path(inspect.getsourcefile(klass)).read_bytes())
        except (OSError, TypeError):
            digest.update(klass.__qualname__.encode())
    return digest.hexdigest()[:12]


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
            options = {k: v for k, v in spec.items() if k != "path"}
            specs[name] = DatasetSpec(self.name, name, (ROOT / spec["path"]).resolve(), options)
        return specs


def list_customers() -> list[Customer]:
    """Every customers/<name>/dataset.py that defines a ConversationDataset subclass."""
    return [c for c in (_load_customer(d) for d in sorted(CUSTOMERS_DIR.iterdir())
                        if (d / "dataset.py").exists()) if c is not None]


def customer_errors() -> list[str]:
    """Customer folders whose dataset.py could not be imported, with the reason."""
    errors = []
    for folder in sorted(CUSTOMERS_DIR.iterdir()):
        if (folder / "dataset.py").exists():
            try:
                _import_customer(folder.name)
            except Exception as exc:  # shown on the home page instead of hiding the customer
                errors.append(f"customers/{folder.name}/dataset.py: {type(exc).__name__}: {exc}")
    return errors


def get_customer(name: str) -> Customer:
    for customer in list_customers():
        if customer.name == name:
            return customer
    known = ", ".join(c.name for c in list_customers()) or "none"
    raise UnknownName(f"unknown customer {name!r}; known customers: {known}")


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


_LOADED: dict[tuple, tuple[tuple, ConversationDataset]] = {}
_LOADED_LOCK = threading.Lock()


def load_dataset(key: str, *, strict: bool = False) -> ConversationDataset:
    """Load a named dataset ("shop_zh/demo"); reused in-process until its file changes."""
    spec = dataset_spec(key)
    if not spec.available:
        raise FileNotFoundError(f"dataset {spec.key}: file {spec.path} not found")
    st = spec.path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    with _LOADED_LOCK:
        loaded = _LOADED.get((spec.key, strict))
        if loaded is None or loaded[0] != stamp:  # a changed file replaces the old version
            cls = get_customer(spec.customer).dataset_class
            loaded = _LOADED[(spec.key, strict)] = (stamp, cls(spec.path, strict=strict, **spec.options))
        return loaded[1]


def _import_customer(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"customers.{name}.dataset")


def _load_customer(folder: Path) -> Customer | None:
    try:
        module = _import_customer(folder.name)
    except Exception:
        return None  # reported by customer_errors()
    classes = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and issubclass(obj, ConversationDataset)
               and obj is not ConversationDataset and obj.__module__ == module.__name__]
    return Customer(folder.name, folder, classes[0]) if classes else None


def __getattr__(name: str):
    """`core.dataset.RemoteDataset`: the same Dataset interface over the data service (core/remote.py)."""
    if name == "RemoteDataset":
        from core.remote import RemoteDataset

        return RemoteDataset
    raise AttributeError(f"module 'core.dataset' has no attribute {name!r}")


def visualise(ds: ConversationDataset) -> dict:
    """Distribution figures (plotly): length, label with threshold, intervention, label vs length."""
    from core.plots import distribution_figures

    return distribution_figures(ds.stats(), ds.good_threshold)


def overview() -> list[dict]:
    """One row per customer dataset for the home page: counts, good share, share needing a human."""
    rows = []
    for customer in list_customers():
        for spec in customer.datasets().values():
            row = {"customer": customer.name, "dataset": spec.key, "language": customer.language}
            try:
                row.update(load_dataset(spec.key).summary())
            except (FileNotFoundError, OSError) as exc:
                row["error"] = str(exc)
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
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except (UnknownName, FileNotFoundError, BadRecord) as exc:
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


_COMMANDS = {"list": _cmd_list, "check": _cmd_check, "plot": _cmd_plot}

if __name__ == "__main__":
    # Run the imported module's main: customer classes subclass core.dataset's class, not __main__'s.
    from core.dataset import main as _main

    sys.exit(_main())
