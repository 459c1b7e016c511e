"""The Data page names what is wrong with a client instead of crashing: a dataset class that
raises in __init__, a dataset declaration without a path, files whose every record is bad."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.client_folders import client_root, write_client
from tests.test_bad_clients import GOOD_LINE, PLAIN

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "1_Data.py")


@pytest.fixture
def clients(tmp_path):
    with client_root(tmp_path) as (cdir, ddir):
        write_client(cdir, "initfail", PLAIN.format(cls="InitFail")
                     + "    def __init__(self, *args, **kwargs):\n        raise RuntimeError('知识库 kb.json missing')\n")
        (ddir / "initfail").mkdir()
        (ddir / "initfail" / "demo.jsonl").write_text(GOOD_LINE + "\n")
        write_client(cdir, "nopath", PLAIN.format(cls="NoPath") + "    datasets = {'main': {'company': 'x'}}\n")
        write_client(cdir, "allbad", PLAIN.format(cls="AllBad"))
        (ddir / "allbad").mkdir()
        (ddir / "allbad" / "logs.jsonl").write_text("{oops\n" + '{"id": "e", "messages": []}\n')
        yield


def _open(client: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value(client).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_dataset_class_that_raises_in_init_is_reported_not_fatal(clients):
    at = _open("initfail")
    assert [e.value for e in at.error] == ["dataset initfail/demo cannot be loaded: RuntimeError: 知识库 kb.json missing"]
    assert not at.metric  # nothing is drawn from a dataset that did not load


def test_a_declaration_without_path_is_named_like_on_the_home_page(clients):
    at = _open("nopath")
    assert any("customers/nopath/dataset.py: datasets['main'] has no 'path'" in e.value for e in at.error)
    assert not any("initfail" in e.value for e in at.error)  # only the chosen client's problems


def test_a_client_whose_every_record_is_bad_gets_an_error_with_the_first_reason(clients):
    at = _open("allbad")
    [error] = [e.value for e in at.error]
    assert "dataset allbad/logs: no valid conversation (2 bad records)" in error and "logs.jsonl:line 1" in error
    assert at.metric[0].value == "0 / 0"
