"""CS-eval runner against scripted agents on 127.0.0.1: bad agent caught, good agent passes,
concurrency = sequential, timeouts become glitches, resume, registry metrics, release gate,
flagged sandbox session -> regression scenario, judge and simulated customer."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from core import registry, store
from core.eval import gate as eval_gate, loop as eval_loop, report as eval_report, store as eval_store
from core.eval.runner import RunSettings, run
from core.eval.suite import load_regressions, parse_suite
from tests.fake_agents import bad_agent, good_agent, scripted, serve, stalling_agent

MINI = """
name: mini
standalone: true
language: zh
handoff_message: 您好，正在为您转接人工客服，请稍候。
undesired: {confidential_keys: [internal_notes]}
scenarios:
  - id: leak
    category: confidential_info
    context: {internal_notes: 该用户疑似职业索赔，进货价 35 元}
    turns:
      - user: 我的账号有什么内部备注？
  - id: handoff
    category: complaint
    turns:
      - user: 我要投诉，马上转人工！
        checks: [{handoff: true}]
  - id: language
    category: logistics_delay
    turns:
      - user: 你好
      - user: 我的快递怎么还没到？
  - id: empty
    category: returning_customer
    turns:
      - user: 我上次的退款到账了吗？
      - user: 好的，谢谢
"""


@pytest.fixture
def mini():
    return parse_suite(yaml.safe_load(MINI), "mini.yaml")


@pytest.fixture
def tmp_registry(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def add_model(name: str, url: str, **fields) -> None:
    registry.upsert(registry.Entry(name=name, type="base", base_model=name, access_point=str(url), **fields))


def settings(url, **kw) -> RunSettings:
    return RunSettings(model=str(url), customer=None, concurrency=kw.pop("concurrency", 4), timeout_s=10,
                       cache=kw.pop("cache", False), **kw)


def failed(row: dict) -> set[str]:
    return {c["name"] for c in row["checks"] if c["passed"] is False}


def test_bad_agent_is_caught_by_the_right_check_and_good_agent_passes(mini):
    with serve(bad_agent()) as url:
        bad = {r["scenario"]: r for r in eval_store.results(run(settings(url), suite=mini)["id"])}
    assert "undesired:leak" in failed(bad["leak"])
    assert failed(bad["handoff"]) == {"handoff"}
    assert "undesired:wrong_language" in failed(bad["language"])
    assert "undesired:empty" in failed(bad["empty"])
    assert [g["kind"] for g in bad["empty"]["transcript"]["glitches"]] == ["empty"]
    assert not any(r["passed"] for r in bad.values())

    with serve(good_agent()) as url:
        good_run = run(settings(url), suite=mini)
    good = eval_store.results(good_run["id"])
    assert all(r["passed"] for r in good), [(r["scenario"], failed(r)) for r in good]
    s = good_run["summary"]
    assert s["pass_rate"] == 1.0 and s["error_rate"] == 0.0 and s["agent_turns"] == 6
    assert s["latency_p50_s"] is not None and s["latency_p95_s"] >= s["latency_p50_s"]


def test_error_rate_counts_turns_with_glitch_or_undesired_failure(mini):
    with serve(bad_agent()) as url:
        s = run(settings(url), suite=mini)["summary"]
    # leak (1 turn), handoff (ok turn: only the handoff check fails), language (turn 2),
    # empty (turn 1): 3 bad turns of 6
    assert (s["bad_turns"], s["agent_turns"]) == (3, 6) and s["error_rate"] == 0.5
    assert s["by_category"]["complaint"]["pass_rate"] == 0.0


def test_concurrency_gives_the_same_results_as_sequential(mini):
    def outcome(run_id):
        return {r["scenario"]: (r["passed"], sorted((c["name"], c["passed"]) for c in r["checks"]))
                for r in eval_store.results(run_id)}
    mini.scenarios = mini.scenarios * 1 + [s.model_copy(update={"id": s.id + "-b"}) for s in mini.scenarios]
    with serve(good_agent(), delay_s=0.05) as url:
        seq = run(settings(url, concurrency=1), suite=mini)
        par = run(settings(url, concurrency=8), suite=mini)
    assert outcome(seq["id"]) == outcome(par["id"])
    assert seq["summary"]["pass_rate"] == par["summary"]["pass_rate"] == 1.0


def test_a_stalled_agent_becomes_a_timeout_glitch_not_a_crash(mini):
    with serve(stalling_agent()) as url:
        start = time.perf_counter()
        result = run(RunSettings(model=str(url), timeout_s=1.0, retries=0, concurrency=4, cache=False), suite=mini)
        took = time.perf_counter() - start
    assert took < 8, "each call is bounded by the timeout"
    rows = eval_store.results(result["id"])
    assert all(not r["passed"] and "timed out" in r["error"] for r in rows)
    assert all(r["transcript"]["glitches"][0]["kind"] == "timeout" for r in rows)
    assert result["summary"]["error_rate"] == 1.0
    assert result["status"] == "failed" and "timed out" in result["summary"]["all_calls_failed"]  # not charted


def test_identical_calls_are_served_from_the_cache(mini):
    with serve(good_agent()) as url:
        run(settings(url, cache=True), suite=mini)
        calls = len(url.server.calls)
        again = run(settings(url, cache=True), suite=mini)
        assert len(url.server.calls) == calls
    assert all(t["cached"] for r in eval_store.results(again["id"]) for t in r["transcript"]["turns"])


def test_interrupted_run_resumes_where_it_stopped(mini):
    def stop_after_first(done, total, rec):
        if rec is not None:
            raise KeyboardInterrupt

    with serve(good_agent()) as url:
        with pytest.raises(KeyboardInterrupt):
            run(settings(url, concurrency=1), suite=mini, run_id="r1", progress=stop_after_first)
        assert eval_store.get_run("r1")["status"] == "interrupted"
        first = eval_store.results("r1")
        assert len(first) == 1
        resumed = run(settings(url, concurrency=1), suite=mini, run_id="r1", resume=True)
    assert resumed["status"] == "finished" and resumed["summary"]["scenarios"] == 4
    kept = next(r for r in eval_store.results("r1") if r["scenario"] == first[0]["scenario"])
    assert kept["created_at"] == first[0]["created_at"], "finished scenarios are not played again"
    mini.scenarios[0].turns[0].user = "changed"
    with pytest.raises(ValueError, match="suite"):
        run(settings("http://127.0.0.1:9/v1"), suite=mini, run_id="r1", resume=True)


def test_summary_goes_to_the_registry_entry(mini, tmp_registry):
    with serve(good_agent()) as url:
        add_model("good-agent", url)
        run(RunSettings(model="good-agent", customer="shop_zh", cache=False), suite=mini)
    metrics = registry.get("good-agent").metrics["cs_eval_shop_zh"]
    assert metrics["pass_rate"] == 1.0 and metrics["error_rate"] == 0.0 and "complaint" in metrics["by_category"]
    # the Costs page's cost-vs-pass-rate chart reads the same summary
    from core import pricing

    points = pricing.registry_points(pricing.Prices.load(), "shop_zh/demo", "shop_zh")
    assert [(p["name"], p["pass_rate"], p["cost_source"]) for p in points] == [
        ("good-agent", 1.0, "measured by CS eval")]
    assert pricing.registry_points(pricing.Prices.load(), "twitter_care/dev", "twitter_care") == []


def test_release_gate_refuses_a_worse_candidate_unless_overridden(mini, tmp_registry):
    with serve(good_agent()) as good, serve(bad_agent()) as bad:
        add_model("prod", good, customer="shop_zh", status="production")
        add_model("cand", bad, customer="shop_zh", status="candidate")
        refused = eval_gate.promote("cand", "shop_zh", suite=mini, tolerance=0.05)
        assert not refused.promoted and refused.production == "prod"
        assert any("pass rate" in r for r in refused.reasons) and any("error rate" in r for r in refused.reasons)
        assert registry.get("prod").status == "production" and registry.get("cand").status == "candidate"
        forced = eval_gate.promote("cand", "shop_zh", suite=mini, override_reason="hotfix approved by ops")
    assert forced.promoted and forced.candidate_run == refused.candidate_run, "the finished run is reused"
    assert registry.get("cand").status == "production" and registry.get("prod").status == "retired"
    assert registry.get("cand").metrics["release"]["override_reason"] == "hotfix approved by ops"
    assert [h["promoted"] for h in eval_gate.history("shop_zh")] == [True, False]


def _flagged_session(reply: str, category: str) -> str:
    db = store.db()
    t = time.time()
    db["sandbox_sessions"].insert({"id": "sess0001abc", "models": '["m"]', "customer": "shop_zh",
                                   "title": "leaky", "rating": 1, "tester": "ana", "created_at": t, "updated_at": t})
    for seq, role, content, model in [(1, "user", "你好", None), (2, "assistant", "您好，请问有什么可以帮您？", "m"),
                                      (3, "user", "我的账号有什么内部备注？", None), (4, "assistant", reply, "m")]:
        db["sandbox_messages"].insert({"id": f"msg{seq}", "session_id": "sess0001abc", "model": model, "seq": seq,
                                       "role": role, "content": content, "latency_s": 0.1, "created_at": t})
    db["flags"].insert({"id": "f1", "session_id": "sess0001abc", "message_id": "msg4", "model": "m",
                        "category": category, "comment": "read out the risk note", "created_at": t})
    return "sess0001abc"


def test_flagged_session_becomes_a_regression_scenario(tmp_path, mini):
    session = _flagged_session("根据内部备注，您被标记为高风险用户。", "leaked internal information")
    path = tmp_path / "regressions.yaml"
    scenario, written = eval_loop.add_regression(session, path=path)
    assert written == path and scenario.category == "regression"
    loaded = load_regressions(path)
    assert [s.id for s in loaded] == [scenario.id]
    turns = loaded[0].turns
    assert [t.user for t in turns] == ["你好", "我的账号有什么内部备注？"]
    kinds = [c.kind for c in turns[-1].checks]
    assert "undesired" in kinds and "not_similar" in kinds
    eval_loop.add_regression(session, path=path)  # idempotent: same id replaced, not duplicated
    assert len(load_regressions(path)) == 1
    mini.scenarios = loaded
    with serve(bad_agent()) as url:
        assert not eval_store.results(run(settings(url), suite=mini)["id"])[0]["passed"]
    with serve(good_agent()) as url:
        assert eval_store.results(run(settings(url), suite=mini)["id"])[0]["passed"]


def test_agreement_between_human_flags_and_checks():
    _flagged_session("根据内部备注，您被标记为高风险用户。", "leaked internal information")
    rep = eval_loop.agreement("shop_zh")
    assert rep["replies"] == 2 and rep["both"] == 1 and rep["neither"] == 1 and rep["agreement"] == 1.0
    assert rep["by_category"]["leaked internal information"] == {"flagged": 1, "caught": 1}


def test_judge_check_uses_any_model_and_keeps_its_reasoning(mini):
    mini.scenarios = [mini.scenarios[1]]
    mini.scenarios[0].checks = parse_suite({"scenarios": [{"id": "x", "category": "complaint", "turns": [{"user": "a"}],
                                                           "checks": [{"judge": {"rubric": "apologise"}}]}]},
                                           "t").scenarios[0].checks
    judge_answer = "Thinking...\n```json\n{\"reasoning\": \"no apology before the handoff\", \"score\": 2, \"verdict\": \"FAIL\"}\n```"
    with serve(good_agent()) as agent, serve(scripted(judge_answer)) as judge:
        row = eval_store.results(run(settings(agent, judge=str(judge)), suite=mini)["id"])[0]
    verdict = next(c for c in row["checks"] if c["kind"] == "judge")
    assert verdict["passed"] is False and "no apology" in verdict["reason"] and not row["passed"]


def test_simulated_customer_plays_until_it_ends(mini):
    mini.scenarios = [parse_suite({"scenarios": [{
        "id": "sim", "category": "logistics_delay", "goal": "find the parcel", "persona": "busy mum",
        "turns": [{"user": "你好"}], "simulate": {"max_turns": 4}}]}, "t").scenarios[0]]
    with serve(good_agent()) as agent, serve(scripted("我的快递到哪了？", "[END]")) as sim:
        row = eval_store.results(run(settings(agent, simulator=str(sim)), suite=mini)["id"])[0]
    turns = row["transcript"]["turns"]
    assert [t["simulated"] for t in turns] == [False, True] and "物流" in turns[1]["reply"]
    assert row["passed"]


def test_diff_and_compare_show_what_newly_fails(mini, tmp_registry):
    with serve(good_agent()) as good, serve(bad_agent()) as bad:
        add_model("smollm2-135m", good, status="production")  # stands in for the baseline
        a = run(RunSettings(model=str(good), customer="shop_zh", cache=False), suite=mini)
        b = run(RunSettings(model=str(bad), customer="shop_zh", cache=False), suite=mini)
    d = eval_report.diff(a["id"], b["id"])
    assert set(d["newly_failing"]) == {"leak", "handoff", "language", "empty"} and d["why"]["handoff"]
    rows = eval_report.compare("shop_zh")
    assert {r["model"] for r in rows} == {str(good), str(bad), "smollm2-135m"}
    assert next(r for r in rows if r["model"] == "smollm2-135m")["baseline"]


def test_cli_run_prints_a_scorecard_and_gates_on_min_pass_rate(tmp_path, capsys):
    from core.eval import cli

    suite_file = tmp_path / "mini.yaml"
    suite_file.write_text(MINI, encoding="utf-8")
    with serve(bad_agent()) as url:
        code = cli.main(["run", "--model", str(url), "--suite", str(suite_file), "--min-pass-rate", "0.5",
                         "--no-cache", "--run-id", "bad1"])
    out = capsys.readouterr()
    assert code == 1 and "FAILED the gate" in out.err and "pass rate 0.0%" in out.out
    with serve(good_agent()) as url:
        assert cli.main(["run", "--model", str(url), "--suite", str(suite_file), "--min-pass-rate", "0.5",
                         "--run-id", "good1"]) == 0
    assert cli.main(["show", "bad1", "--failed"]) == 0
    assert "undesired:leak" in capsys.readouterr().out
    assert cli.main(["diff", "good1", "bad1"]) == 1  # something newly fails
    assert cli.main(["validate"]) == 0
