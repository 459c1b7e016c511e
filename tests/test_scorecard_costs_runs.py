"""Scorecard cost chart: a note instead of a -1..1 axis when every model costs $0; runs whose
process died (even one started outside any job, e.g. `promote` killed with SIGKILL) are marked
interrupted when the Scorecard or `eval show` reads them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from core.eval import cli as eval_cli, report as eval_report, store as eval_store
from core.eval.suite import parse_suite
from tests.test_eval_runner import MINI
from tests.test_scorecard_more import _two_runs, tmp_registry  # noqa: F401  (fixture)

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_Scorecard.py")


@pytest.fixture
def mini():
    return parse_suite(yaml.safe_load(MINI), "mini.yaml")


def _charts(at: AppTest) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert not at.exception
    return at


def test_all_free_models_get_a_note_not_a_cost_chart(mini):
    _two_runs(mini)
    at = _page()
    assert any("all $0 (local) — 2 models" in i.value for i in at.info)
    assert not any("Cost per session ($)" in spec for spec in _charts(at))
    assert any("Error rate" in spec for spec in _charts(at))  # the other charts still show


def test_a_priced_model_brings_the_cost_chart_back(mini):
    bad = _two_runs(mini)
    eval_store.set_status(bad["id"], "finished", {**bad["summary"], "cost_per_session_usd": 0.0021})
    at = _page()
    assert not any("all $0" in i.value for i in at.info)
    assert any("Cost per session ($)" in spec for spec in _charts(at))
    assert eval_report.cost_note([{"run_id": "a", "cost_per_session_usd": 0.0}, {"run_id": None}]) is not None


def _killed_run(run_id: str) -> None:
    """A process that starts a run outside any job (as `promote` or a CLI run does), then SIGKILL."""
    code = ("import sys, time\nfrom core.eval import store\n"
            f"store.create_run({run_id!r}, {{'model': 'm', 'customer': 'shop_zh'}}, 'h', 'shop_zh')\n"
            "print('ready', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert eval_report.reap_interrupted() == []  # alive: left running
        assert eval_store.get_run(run_id)["status"] == "running"
    finally:
        proc.kill()
        proc.wait()


def test_a_run_whose_process_was_killed_reads_as_interrupted_in_eval_show(capsys):
    _killed_run("r-killed")
    assert eval_store.get_run("r-killed")["status"] == "running"  # nothing noticed yet
    assert eval_cli.main(["show", "r-killed"]) == 0
    assert "run r-killed is interrupted" in capsys.readouterr().out
    assert eval_store.get_run("r-killed")["status"] == "interrupted"


def test_the_scorecard_offers_to_resume_a_killed_run_and_a_resumed_run_is_owned_by_its_new_process():
    _killed_run("r-page")
    at = _page()
    assert any("Interrupted: **m** · `r-page`" in m.value for m in at.markdown)
    assert at.button(key="resume_r-page")
    eval_store.set_status("r-page", "running")  # resumed here: this live process owns it now
    assert eval_report.reap_interrupted() == [] and eval_store.get_run("r-page")["status"] == "running"


def test_a_recycled_pid_does_not_keep_a_run_alive():
    import os
    import socket

    from core.eval import owners

    assert owners.owner_alive(owners.me())
    assert not owners.owner_alive({"pid": os.getpid(), "host": socket.gethostname(), "proc_start": "1"})
    assert owners.owner_alive({"pid": 1, "host": "another-host", "proc_start": "1"})  # cannot tell: left alone
