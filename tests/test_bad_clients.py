"""A client whose every file is bad, or whose dataset.py cannot be imported: the home page, the
data service and the CLI keep working and say what is wrong."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import dataset as data
from core.dataset import ConversationDataset
from tests.client_folders import client_root, write_client

ROOT = Path(__file__).resolve().parent.parent
PLAIN = "from core.dataset import ConversationDataset\n\n\nclass {cls}(ConversationDataset):\n    language = 'en'\n"
GOOD_LINE = json.dumps({"id": "g1", "messages": [{"role": "user", "content": "Where is my parcel?"},
                                                 {"role": "assistant", "content": "It ships today."}]})


@pytest.fixture
def clients(tmp_path):
    """good (one good file), allbad (every file bad), noimport (dataset.py raises), nopath (bad declaration)."""
    with client_root(tmp_path) as (cdir, ddir):
        write_client(cdir, "good", PLAIN.format(cls="Good"))
        (ddir / "good").mkdir()
        (ddir / "good" / "demo.jsonl").write_text(GOOD_LINE + "\n")
        write_client(cdir, "allbad", PLAIN.format(cls="AllBad"))
        (ddir / "allbad").mkdir()
        (ddir / "allbad" / "logs.jsonl").write_bytes(
            b"[" * 100_000 + b"]" * 100_000 + b"\n"
            + b'{"id": "n", "messages": [{"role": "user", "content": "x"}], "context": {"s": NaN}}\n'
            + b'{"id": "s", "messages": [{"role": "user", "content": "\\ud800"}]}\n')
        (ddir / "allbad" / "dump.json").write_bytes(b"[" * 50_000)
        write_client(cdir, "noimport", "import kb_parser_that_does_not_exist\n")
        write_client(cdir, "nopath", PLAIN.format(cls="NoPath") + "    datasets = {'main': {'company': 'x'}}\n")
        yield cdir, ddir


def test_home_page_survives_a_client_whose_every_file_is_bad(clients):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("dataset")
    assert table.loc["good/demo", "conversations"] == 1
    logs = table.loc["allbad/logs", "error"]
    assert table.loc["allbad/logs", "conversations"] == 0 and "3 bad records" in logs and "nested too deeply" in logs
    assert "nested too deeply" in table.loc["allbad/dump", "error"]
    shown = [e.value for e in at.error]
    assert any("customers/noimport/dataset.py: import failed: ModuleNotFoundError" in e for e in shown)
    assert any("customers/nopath/dataset.py: datasets['main'] has no 'path'" in e for e in shown)


def test_data_service_serves_a_client_whose_every_file_is_bad(clients):
    from core.api import create_app

    client = create_app().test_client()
    listing = client.get("/api/v1/customers").get_json()
    assert {c["name"] for c in listing["customers"]} == {"good", "allbad", "nopath"}
    assert any("noimport" in e and "import failed" in e for e in listing["errors"])
    info = client.get("/api/v1/datasets/allbad/logs")
    assert info.status_code == 200 and info.get_json()["length"] == 0
    assert info.get_json()["summary"]["bad_records"] == 3
    errors = client.get("/api/v1/datasets/allbad/logs/errors").get_json()["errors"]
    assert [e["where"] for e in errors] == ["line 1", "line 2", "line 3"]
    assert "nan is not a valid JSON number" in errors[1]["reason"] and "lone surrogate" in errors[2]["reason"]
    assert client.get("/api/v1/datasets/allbad/logs/items").get_json()["total"] == 0
    assert client.get("/api/v1/datasets/allbad/logs/stats").status_code == 200
    assert client.get("/api/v1/datasets/allbad/logs/figures.png").status_code == 200
    missing = client.get("/api/v1/datasets/noimport/x")
    assert missing.status_code == 404 and "import failed: ModuleNotFoundError" in missing.get_json()["message"]
    item = client.get("/api/v1/datasets/good/demo/items/0")
    assert item.status_code == 200 and item.get_json()["id"] == "g1"


def test_import_errors_are_reported_as_such_not_as_unknown_customers(clients, capsys):
    with pytest.raises(data.CustomerError, match=r"customer 'noimport' cannot be loaded: .*import failed: "
                                                 r"ModuleNotFoundError: No module named 'kb_parser"):
        data.get_customer("noimport")
    with pytest.raises(data.UnknownName, match="unknown customer 'nobody'; known customers: allbad, good, nopath"):
        data.get_customer("nobody")
    with pytest.raises(data.UnknownName, match="unknown customer '../good'"):
        data.get_customer("../good")  # a name, never a path
    assert data.main(["check", "noimport/x"]) == 2
    assert "import failed: ModuleNotFoundError" in capsys.readouterr().err
    assert data.main(["check", "allbad/logs"]) == 0
    out = capsys.readouterr().out
    assert "logs.jsonl:line 1: invalid JSON: nested too deeply to read" in out
    assert data.main(["list"]) == 0
    assert "noimport/dataset.py: import failed" in capsys.readouterr().err


def test_a_client_without_a_dataset_class_is_reported(tmp_path):
    with client_root(tmp_path) as (cdir, _):
        write_client(cdir, "empty", "X = 1\n")
        assert data.list_customers() == []
        assert data.customer_errors() == ["customers/empty/dataset.py: defines no subclass of "
                                          "core.dataset.ConversationDataset"]


def test_default_dataset_is_the_clients_first(clients):
    assert data.default_dataset("allbad") == "dump"  # data/<client>/ files in name order
    with pytest.raises(data.UnknownName, match="has no dataset: add a file under data/nopath/"):
        data.default_dataset("nopath")


def test_rule_files_are_part_of_the_label_cache_key(tmp_path):
    source = ("from core.dataset import ConversationDataset\n\n\n"
              "class Kb(ConversationDataset):\n    rule_files = ['kb.json']\n\n"
              "    def quality(self, conv):\n        return self.rule_data('kb.json')['score']\n")
    with client_root(tmp_path) as (cdir, ddir):
        folder = write_client(cdir, "kbclient", source)
        (ddir / "kbclient").mkdir()
        (ddir / "kbclient" / "d.jsonl").write_text(GOOD_LINE + "\n")
        (folder / "kb.json").write_text('{"score": 0.25}')
        assert data.load_dataset("kbclient/d")[0].label == 0.25
        (folder / "kb.json").write_text('{"score": 0.75}')  # only the knowledge base changes
        assert data.load_dataset("kbclient/d")[0].label == 0.75, "in-process copy reloaded"
        data._LOADED.clear()
        assert data.load_dataset("kbclient/d")[0].label == 0.75, "label cache on disk invalidated"


def test_reading_an_undeclared_rule_file_is_a_clear_error(tmp_path):
    class Undeclared(ConversationDataset):
        def quality(self, conv):
            return self.rule_data("kb.json")["score"]

    path = tmp_path / "d.jsonl"
    path.write_text(GOOD_LINE + "\n")
    (error,) = Undeclared(path).errors
    assert "quality() raised ValueError: 'kb.json' is not in Undeclared.rule_files; declare it there" in error.reason


def test_import_core_dataset_and_listing_customers_need_no_torch():
    code = ("import sys, core.dataset as d\nnames = [c.name for c in d.list_customers()]\n"
            "assert 'shop_zh' in names and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
            "ds = d.load_dataset('shop_zh/demo')\nimport torch.utils.data as tud\n"
            "assert isinstance(ds, tud.Dataset) and issubclass(type(ds), tud.Dataset)\n"
            "import core.remote\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_core_dataset_and_core_remote_do_not_import_each_other():
    for module, other in (("dataset", "core.remote"), ("remote", "core.dataset")):
        source = (ROOT / "core" / f"{module}.py").read_text()
        assert f"from {other} import" not in source and f"import {other}" not in source


def test_data_page_shows_the_bad_records_of_a_client_whose_every_file_is_bad(clients):
    at = AppTest.from_file(str(ROOT / "pages/1_Data.py"), default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("allbad").run()
    at.sidebar.selectbox[1].set_value("logs").run()
    assert not at.exception
    assert at.metric[0].value == "0 / 0"
    reasons = at.dataframe[0].value["reason"].tolist()
    assert "invalid JSON: nested too deeply to read" in reasons[0] and "lone surrogate" in reasons[2]
