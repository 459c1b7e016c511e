"""Tool environments and task scenarios: schemas, copy-on-write state, judging, agents, pass^k."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Literal

import pytest

from core.eval import agents as ag
from core.eval import tasks as tk
from core.eval import tools as tl
from tests.conftest import SHARED_DATA
from tests.fake_tool_agents import serve_tools

TAU = SHARED_DATA / "tau2_retail" / "db.json"


def needs_tau():
    if not TAU.exists():
        pytest.skip(f"τ²-bench retail data not found at {TAU} (it ships in ../shared/data beside the repo)")


# ---------------------------------------------------------------- schemas and state

@tl.tool("write")
def _move(db, order_id: str, qty: int, mode: Literal["fast", "slow"] = "fast", tags: list[str] | None = None) -> dict:
    """Move an order.

    Args:
        order_id: The order.
        qty: How many
            (continued line).
        mode: Speed.
        tags: Labels.
    """
    order = db["orders"][order_id]
    order["qty"] = qty
    if qty > 5:
        raise tl.ToolError("too many")  # after a change: the call must leave nothing behind
    return order


def test_schema_is_derived_from_signature_and_docstring():
    schema = tl.make_tool(_move).schema["function"]
    props = schema["parameters"]["properties"]
    assert schema["name"] == "_move" and schema["description"] == "Move an order."
    assert props["qty"] == {"type": "integer", "description": "How many (continued line)."}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert schema["parameters"]["required"] == ["order_id", "qty"]

    def undocumented(db, x: int) -> int:
        """Does something."""
    with pytest.raises(TypeError, match="'x' is not described"):
        tl.make_tool(tl.tool("read")(undocumented))


def _env(base: dict) -> tl.Environment:
    tool_ = tl.make_tool(_move)
    return tl.Environment("t", object(), {tool_.name: tool_}, base)


def test_copy_on_write_state_diffs_and_rolls_back_failed_calls():
    base = {"orders": {"A": {"qty": 1, "items": [1, 2]}, "B": {"qty": 2}}, "note": ["x"]}
    frozen = copy.deepcopy(base)
    session = _env(base).session()
    ok = session.call("_move", {"order_id": "A", "qty": 3})
    assert not ok["error"] and ok["diff"] == [{"path": "orders/A/qty", "before": 1, "after": 3}]
    bad = session.call("_move", {"order_id": "A", "qty": 9})
    assert bad["error"] and bad["result"] == "Error: too many" and bad["diff"] == []
    assert session.state["orders"]["A"]["qty"] == 3  # the failed call changed nothing
    assert session.call("_move", '{"order_id": "Z", "qty": 1}')["result"].startswith("Error: not found")
    assert "must be integer" in session.call("_move", {"order_id": "A", "qty": "2"})["result"]
    assert "unknown argument" in session.call("_move", {"order_id": "A", "qty": 1, "x": 1})["result"]
    assert base == frozen  # the shared base never changes
    assert session.changes() == [{"path": "orders/A/qty", "before": 1, "after": 3}]
    other = _env(base).session()
    assert not session.state.same_as(other.state)
    other.call("_move", {"order_id": "A", "qty": 3})
    assert session.state.same_as(other.state)


# ---------------------------------------------------------------- shop_zh: policy enforced by the tools

def test_shop_zh_tools_enforce_windows_and_caps():
    env = tl.load_environment("shop_zh")
    s = env.session()
    assert "超过 7 天" in s.call("refund", {"order_no": "202410200002", "amount": 10.0, "reason": "七天无理由"})["result"]
    assert "照片" in s.call("refund", {"order_no": "202411080003", "amount": 45.5, "reason": "质量问题"})["result"]
    assert "不支持无理由" in s.call("refund", {"order_no": "202411060006", "amount": 1.0, "reason": "七天无理由"})["result"]
    assert "1 到 10 元" in s.call("issue_coupon", {"order_no": "202411090004", "amount": 50, "reason": "物流延误"})["result"]
    assert "72 小时" in s.call("logistics_urge", {"order_no": "202411050001"})["result"]
    assert "0 到 79.0" in s.call("refund", {"order_no": "202411050001", "amount": 80.0, "reason": "七天无理由"})["result"]
    assert s.changes() == []  # every refused write left the state alone
    done = s.call("refund", {"order_no": "202411050001", "amount": 79.0, "reason": "七天无理由"})
    assert not done["error"] and {"path": "orders/202411050001/status", "before": "已签收", "after": "退款中"} in done["diff"]


class _Scripted:
    """An agent that makes fixed tool calls on its first turn, then says one line."""

    def __init__(self, calls: list[tuple[str, dict]], text: str = "已为您处理。"):
        self.calls, self.text = list(calls), text

    def __call__(self, messages, tools):
        if self.calls:
            name, args = self.calls.pop(0)
            return tk.AgentTurn(tool_calls=[{"name": name, "arguments": args}])
        return tk.AgentTurn(text=self.text)


def _run(customer, agent_factory, ids=None, trials=1, concurrency=4):
    settings = tk.TaskSettings(model="scripted", customer=customer, trials=trials, tasks=ids,
                               concurrency=concurrency, force=True)  # scripted agents skip the tool probe
    return tk.run_tasks(settings, agent_factory=agent_factory, store=False,
                        simulator_factory=lambda task, trial: ag.ScriptedSimulator(task))


def test_shop_zh_oracle_passes_and_over_promising_fails():
    env = tl.load_environment("shop_zh")
    oracle = _run("shop_zh", lambda task, trial: ag.OracleAgent(task, env, ag.oracle_plan(task, env)), trials=2)
    assert oracle["summary"]["pass_hat"] == {"1": 1.0, "2": 1.0} and oracle["summary"]["tasks"] == 5
    promise = _run("shop_zh", lambda task, trial: _Scripted([
        ("order_lookup", {"order_no": "202410200002"}),
        ("refund", {"order_no": "202410200002", "amount": 299.0, "reason": "质量问题", "photos": True})]),
        ids=["zh-refund-out-of-window"])
    row = promise["results"][0]
    failed = {c["kind"] for c in row["checks"] if c["passed"] is False}
    assert not row["passed"] and "protocol" in failed  # the refused refund is the over-promise
    coupon = _run("shop_zh", lambda task, trial: _Scripted([
        ("order_lookup", {"order_no": "202411090004"}), ("logistics_urge", {"order_no": "202411090004"}),
        ("issue_coupon", {"order_no": "202411090004", "amount": 8, "reason": "物流延误"})]),
        ids=["zh-logistics-delay-coupon"])
    diff = coupon["results"][0]["transcript"]["gold_diff"]
    assert not coupon["results"][0]["passed"] and diff == [
        {"path": "coupons/202411090004/amount", "before": 10, "after": 8}]


# ---------------------------------------------------------------- τ²-bench retail

def test_tau_retail_oracle_passes_all_114_tasks():
    needs_tau()
    out = tk.run_tasks(tk.TaskSettings(model="@oracle", customer="tau_retail", concurrency=8), store=False)
    assert out["summary"]["scenarios"] == 114 and out["summary"]["passed"] == 114
    assert len(tk.load_tasks("tau_retail", "test")) == 40 and len(tk.load_tasks("tau_retail", "train")) == 74


@pytest.mark.parametrize("kind,criterion", [("skip_auth", "protocol"), ("no_confirm", "protocol"),
                                            ("wrong_variant", "state"), ("other_user", "protocol")])
def test_tau_retail_planted_failures_are_caught(kind, criterion):
    needs_tau()
    env = tl.load_environment("tau_retail")
    tasks = tk.load_tasks("tau_retail")
    dependent = {t.id for t in tasks if ag.planted_plan(kind, t, env) is not None}
    assert len(dependent) >= 30
    out = tk.run_tasks(tk.TaskSettings(model=f"@bad:{kind}", customer="tau_retail", concurrency=8), store=False)
    by_task = {r["transcript"]["task"]: r for r in out["results"]}
    for tid, row in by_task.items():
        if tid in dependent:
            assert not row["passed"], f"{kind} not caught on task {tid}"
            assert any(c["kind"] == criterion and c["passed"] is False for c in row["checks"])
        else:
            assert row["passed"], f"task {tid} does not depend on {kind} but failed"


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_parallel_trials_do_not_leak_state():
    """Trials writing to the same records in parallel each see only their own writes."""
    env = tl.load_environment("shop_zh")
    before = _fingerprint(env.base)
    amounts = {0: 10.0, 1: 20.0, 2: 30.0, 3: 40.0, 4: 50.0, 5: 60.0, 6: 70.0, 7: 79.0}

    def factory(task, trial):
        return _Scripted([("refund", {"order_no": "202411050001", "amount": amounts[trial], "reason": "七天无理由"}),
                          ("order_lookup", {"order_no": "202411050001"})])
    out = _run("shop_zh", factory, ids=["zh-return-in-window"], trials=8, concurrency=8)
    seen = {}
    for row in out["results"]:
        trial = row["transcript"]["trial"]
        lookup = [m for m in row["transcript"]["messages"] if m["role"] == "tool"][1]
        assert json.loads(lookup["content"])["refunded"] == amounts[trial]  # not another trial's refund
        seen[trial] = row["transcript"]["state_diff"]
        state = next(c for c in row["checks"] if c["kind"] == "state")
        assert state["passed"] == (amounts[trial] == 79.0)  # judged against its own state only
    assert len(seen) == 8 and _fingerprint(env.base) == before


def test_pass_hat_is_taus_estimator():
    outcomes = {"a": [True, True, False, True], "b": [False] * 4, "c": [True] * 4}
    assert tk.pass_hat(outcomes, 1) == round((3 / 4 + 0 + 1) / 3, 4)
    assert tk.pass_hat(outcomes, 2) == round((3 / 6 + 0 + 1) / 3, 4)
    assert tk.pass_hat(outcomes, 4) == round(1 / 3, 4)
    with pytest.raises(ValueError, match="between 1 and 8"):
        tk.TaskSettings(model="m", customer="shop_zh", trials=9)


# ---------------------------------------------------------------- agents under test through core.llm

def test_url_agent_with_native_tools_and_one_that_cannot_call_tools():
    bodies: list = []

    def responder(messages, tools):
        if tools and tools[0]["function"]["name"] == "ping":
            return {"call": ("ping", {"text": "ok"})}
        last = messages[-1]
        if last["role"] == "user" and "202411050001" in last["content"]:
            return {"call": ("order_lookup", {"order_no": "202411050001"})}
        if last["role"] == "tool":
            done = sum(m["role"] == "tool" for m in messages)
            return {"call": ("refund", {"order_no": "202411050001", "amount": 79.0, "reason": "七天无理由"})} \
                if done == 1 else {"text": "已为您退款，1–3 个工作日原路退回。"}
        return {"text": "请问还有什么可以帮您？"}

    with serve_tools(responder, bodies) as url:
        out = tk.run_tasks(tk.TaskSettings(model=url, customer="shop_zh", tasks=["zh-return-in-window"]), store=False)
    row = out["results"][0]
    assert out["summary"]["tool_calling"]["ok"] is True
    assert [c["name"] for c in row["transcript"]["tool_calls"]] == ["order_lookup", "refund"]
    assert row["passed"], [c for c in row["checks"] if c["passed"] is False]
    assert any(b.get("tools") and b["tools"][0]["function"]["name"] == "handoff" for b in bodies)

    with serve_tools(lambda messages, tools: {"text": "I can only chat."}) as url:
        out = tk.run_tasks(tk.TaskSettings(model=url, customer="shop_zh"), store=False)
    assert out["summary"]["tool_calling"]["ok"] is False and out["results"] == []
    assert "instead of calling a tool" in out["summary"]["tool_calling"]["reason"]


def test_text_protocol_round_trip():
    from core import llm

    env = tl.load_environment("shop_zh")
    msgs = [{"role": "system", "content": "policy"}, {"role": "user", "content": "查订单"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "order_lookup", "arguments": '{"order_no": "1"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "order_lookup", "content": "Error: 订单 1 不存在"}]
    text = llm.tools_as_text(msgs, env.schemas)
    assert text[0]["content"].startswith("policy") and "- refund(order_no (string)" in text[0]["content"]
    assert text[2]["content"] == '<tool_call>{"name": "order_lookup", "arguments": {"order_no": "1"}}</tool_call>'
    assert text[3] == {"role": "user", "content": "Tool result (order_lookup): Error: 订单 1 不存在"}
    assert llm.parse_tool_calls('好的 <tool_call>{"name": "refund", "arguments": {"amount": 1}}</tool_call>') == [
        {"id": "call_0", "name": "refund", "arguments": {"amount": 1}}]
    assert llm.parse_tool_calls('{"name": "handoff", "arguments": {}}')[0]["name"] == "handoff"
    assert llm.parse_tool_calls("您好，请提供订单号。") == []


def test_cli_runs_tasks_and_stores_pass_hat(capsys):
    from core.eval import cli
    from core.eval import store as es

    assert cli.main(["run", "--customer", "shop_zh", "--model", "@oracle", "--trials", "2"]) == 0
    assert "pass^2 100.0%" in capsys.readouterr().out
    run = es.runs(customer="shop_zh")[0]
    assert run["summary"]["pass_hat"] == {"1": 1.0, "2": 1.0} and len(es.results(run["id"])) == 10
    assert cli.main(["run", "--customer", "shop_zh", "--model", "@bad:nope", "--trials", "1"]) == 2


def test_a_model_plays_the_customer_until_its_end_token():
    seen: list = []

    def customer(messages, tools):
        seen.append(messages)
        if len(messages) <= 2:  # system prompt + the agent's greeting
            return {"text": "订单 202411050001 的 T 恤我想七天无理由退款。"}
        return {"text": tk.END_TOKEN}

    with serve_tools(customer) as url:
        out = tk.run_tasks(tk.TaskSettings(model="@oracle", customer="shop_zh", simulator=url,
                                           tasks=["zh-return-in-window"]), store=False)
    row = out["results"][0]
    assert row["passed"] and row["transcript"]["ended"] == "customer_stop"
    assert row["transcript"]["turns"][0]["user"] == "订单 202411050001 的 T 恤我想七天无理由退款。"
    system = seen[0][0]["content"]
    assert "你三天前签收了订单 202411050001" in system and tk.END_TOKEN in system  # the task's instructions
    assert seen[1][-1] == {"role": "user", "content": row["transcript"]["turns"][0]["reply"]}  # roles swapped


def test_assertions_are_judged_by_the_judge_model_or_left_not_judged():
    needs_tau()
    task = next(t for t in tk.load_tasks("tau_retail") if t.assertions)
    verdicts = []

    def judge(messages, tools):
        verdicts.append(messages[-1]["content"])
        return {"text": '{"met": false, "reason": "the agent never said it"}'}

    with serve_tools(judge) as url:
        out = tk.run_tasks(tk.TaskSettings(model="@oracle", customer="tau_retail", tasks=[task.id], judge=url),
                           store=False)
    checks = [c for c in out["results"][0]["checks"] if c["kind"] == "assertion"]
    assert len(checks) == len(task.assertions) == len(verdicts) and all(c["passed"] is False for c in checks)
    assert task.assertions[0] in verdicts[0] and "<conversation>" in verdicts[0]
    plain = tk.run_tasks(tk.TaskSettings(model="@oracle", customer="tau_retail", tasks=[task.id]), store=False)
    assert plain["results"][0]["passed"] and all(
        c["passed"] is None for c in plain["results"][0]["checks"] if c["kind"] == "assertion")


def test_tau_retail_without_its_data_skips_cleanly(tmp_path, monkeypatch, capsys):
    from core.eval import cli
    from customers.tau_retail import tools as tau_tools

    monkeypatch.setenv("CSFORGE_SHARED_DATA", str(tmp_path))
    tl.load_environment.cache_clear()
    tau_tools.load_state.cache_clear()
    try:
        assert cli.main(["run", "--customer", "tau_retail", "--model", "@oracle"]) == 2
        assert "skipped: tau_retail:" in capsys.readouterr().err
    finally:
        tl.load_environment.cache_clear()
        tau_tools.load_state.cache_clear()


def test_a_prompt_model_gets_policy_and_tools_in_its_prompt(tmp_path, monkeypatch):
    from tests.helpers_llm import write_registry

    bodies: list = []
    with serve_tools(lambda messages, tools: {"text": '<tool_call>{"name": "ping", "arguments": {"text": "ok"}}'
                                                      "</tool_call>"}, bodies) as url:
        reg = write_registry(tmp_path / "registry.yaml", [
            {"name": "remote-base", "type": "base", "base_model": "x", "access_point": url},
            {"name": "shop-prompt", "type": "prompt", "base_model": "remote-base", "access_point": url,
             "customer": "shop_zh", "prompt_template": "Policy:\n{policy}\n\nHistory:\n{history}"}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
        out = tk.run_tasks(tk.TaskSettings(model="shop-prompt", customer="shop_zh", tasks=["zh-return-in-window"],
                                           max_steps=2, max_turns=1), store=False)
    assert out["summary"]["tool_calling"] == {"ok": True, "reason": "called ping"}
    sent = bodies[0]
    assert "tools" not in sent  # the text protocol, not native function calling
    system = sent["messages"][0]["content"]
    assert "7 天无理由退货" in system and "You can call these tools:" in system and "- ping(text (string))" in system
    row = out["results"][0]  # the model keeps calling ping, which shop_zh does not have
    assert row["transcript"]["tool_calls"][0]["result"].startswith("Error: unknown tool 'ping'")
    assert row["transcript"]["ended"] == "max_steps" and not row["passed"]


def test_cli_prints_the_derived_tools(capsys):
    from core.eval import cli

    assert cli.main(["tools", "shop_zh", "--json"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    refund = next(s["function"] for s in schemas if s["function"]["name"] == "refund")
    assert refund["parameters"]["properties"]["reason"]["enum"] == ["七天无理由", "质量问题", "物流超时"]
    assert refund["parameters"]["required"] == ["order_no", "amount", "reason"]
    assert cli.main(["tools", "nope"]) == 2


def test_whole_task_runs_write_registry_metrics_subsets_do_not(tmp_path, monkeypatch):
    from core import registry
    from tests.helpers_llm import write_registry

    def agent(messages, tools):
        return {"call": ("ping", {"text": "ok"})} if tools and tools[0]["function"]["name"] == "ping" \
            else {"text": "您好，请问订单号是多少？"}

    with serve_tools(agent) as url:
        reg = write_registry(tmp_path / "registry.yaml", [
            {"name": "talker", "type": "base", "base_model": "x", "access_point": url}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
        tk.run_tasks(tk.TaskSettings(model="talker", customer="shop_zh", tasks=["zh-complaint-handoff"]))
        assert "tasks_shop_zh" not in (registry.load().entries["talker"].metrics or {})
        out = tk.run_tasks(tk.TaskSettings(model="talker", customer="shop_zh", trials=2))
    saved = registry.load().entries["talker"].metrics["tasks_shop_zh"]
    assert saved["run_id"] == out["run_id"] and saved["tasks"] == 5 and saved["trials"] == 2
    assert saved["pass_hat"] == out["summary"]["pass_hat"] and saved["pass_hat"]["1"] < 1.0


def test_tool_results_ground_what_the_agent_says():
    def run(text):
        out = _run("shop_zh", lambda task, trial: _Scripted([("order_lookup", {"order_no": "202411050001"})], text),
                   ids=["zh-return-in-window"])
        return {c["name"]: c for c in out["results"][0]["checks"]}["undesired:grounding"]

    assert run("查到了，订单 202411050001 实付 79.0 元，签收 3 天。")["passed"] is True  # from the lookup's result
    invented = run("查到了，订单 202411050001 实付 88.5 元。")
    assert invented["passed"] is False and "88.5" in invented["reason"]
