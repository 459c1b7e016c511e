"""Release gate: the first promotion meets the suite's threshold; shared base models are production
per customer without rewriting `customer`; a run needed by promote shows progress; a run that never
reached the agent is failed, not scored; an interrupted run is marked interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import registry
from core.eval import gate, store as eval_store
from core.eval.suite import parse_suite
from tests.fake_agents import bad_agent, good_agent, serve
from tests.test_eval_runner import MINI

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mini():
    suite = parse_suite(yaml.safe_load(MINI), "mini.yaml")
    suite.thresholds.pass_rate = 0.8
    return suite


@pytest.fixture(autouse=True)
def tmp_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def add(name, url, **fields):
    registry.upsert(registry.Entry(name=name, type="base", base_model=name, access_point=str(url), **fields))


def test_first_promotion_must_meet_the_pass_rate_threshold(mini):
    with serve(bad_agent()) as bad, serve(good_agent()) as good:
        add("bad-cand", bad, customer="shop_zh", status="candidate")
        add("good-cand", good, customer="shop_zh", status="candidate")
        refused = gate.promote("bad-cand", "shop_zh", suite=mini)
        assert not refused.promoted and "threshold 80%" in refused.reasons[0]
        assert gate.production_model("shop_zh") is None
        ok = gate.promote("good-cand", "shop_zh", suite=mini)
    assert ok.promoted and gate.production_model("shop_zh") == "good-cand"


def test_shared_base_model_is_production_per_customer_without_rewriting_customer(mini):
    with serve(good_agent()) as good:
        add("shared-base", good)  # no customer: serves anyone
        assert gate.promote("shared-base", "shop_zh", suite=mini).promoted
        assert gate.promote("shared-base", "twitter_care", suite=mini).promoted  # not blocked by the first
        entry = registry.get("shared-base")
        assert entry.customer is None and entry.status is None
        assert gate.production_map() == {"shop_zh": "shared-base", "twitter_care": "shared-base"}
        add("tuned", good, customer="shop_zh", status="candidate")
        assert gate.promote("tuned", "shop_zh", suite=mini).promoted
    assert gate.production_map() == {"shop_zh": "tuned", "twitter_care": "shared-base"}
    assert registry.get("shared-base").metrics["production_for"] == ["twitter_care"]


def test_a_model_that_never_answered_cannot_be_promoted_even_with_an_override(mini):
    add("no-host", "http://127.0.0.1:9/v1", customer="shop_zh", status="candidate")
    dec = gate.promote("no-host", "shop_zh", suite=mini, override_reason="ship it")
    assert not dec.promoted and "failed" in dec.reasons[0]
    run = eval_store.get_run(dec.candidate_run)
    assert run["status"] == "failed" and run["summary"]["all_calls_failed"]
    assert "cs_eval_shop_zh" not in (registry.get("no-host").metrics or {})  # not charted as a 0% score


def test_page_style_promote_does_not_run_suites_inline(mini):
    with serve(good_agent()) as good:
        add("cand", good, customer="shop_zh", status="candidate")
        dec = gate.promote("cand", "shop_zh", suite=mini, run_missing=False)
    assert not dec.promoted and "no finished run" in dec.reasons[0]
    assert eval_store.runs() == []


def test_promote_cli_prints_progress_and_a_killed_run_is_interrupted(tmp_path, tmp_registry):
    with serve(good_agent(), delay_s=0.5) as slow:
        add("slow-cand", slow, customer="shop_zh", status="candidate")
        env = {**os.environ, "CSFORGE_REGISTRY": str(tmp_registry), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "core.eval", "promote", "slow-cand", "--customer", "shop_zh",
                                 "--concurrency", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("[1/"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert any(l.startswith("[1/") for l in lines), "".join(lines)[-2000:]
    runs = eval_store.runs(model="slow-cand")
    assert len(runs) == 1 and runs[0]["status"] == "interrupted"
