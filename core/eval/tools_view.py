"""Streamlit views for tool environments and task runs (pages call these; logic stays in core.eval).

    render_task_runs()      Scorecard tab: pass^1..pass^k per run and per task, each trial's
                            transcript with tool calls inline, the failing criteria, and the
                            final state diffed against the initial state and against the gold one
    render_tool_sandbox()   Sandbox section: a tester plays the customer against an agent on a
                            client's environment; tool calls, results and the state diff show live
"""
from __future__ import annotations

import json
from typing import Any

from core.paths import CUSTOMERS_DIR


def task_customers() -> list[str]:
    """Clients with a tool environment (customers/<name>/tools.py)."""
    return sorted(p.parent.name for p in CUSTOMERS_DIR.glob("*/tools.py"))


def task_runs(customer: str) -> list[dict]:
    from core.eval import store as es

    return [r for r in es.runs(customer=customer) if (r["settings"] or {}).get("kind") == "tasks"]


def runs_table(runs: list[dict]) -> list[dict]:
    """One row per task run: model, split, tasks x trials, pass^k, what failed."""
    rows = []
    for r in runs:
        s = r["summary"] or {}
        row = {"run": r["id"], "model": r["model"], "status": r["status"], "split": s.get("split") or "all",
               "tasks": s.get("tasks"), "trials": s.get("trials")}
        row.update({f"pass^{k}": v for k, v in (s.get("pass_hat") or {}).items()})
        probe = s.get("tool_calling") or {}
        row["tool calling"] = "ok" if probe.get("ok", True) else f"cannot call tools: {probe.get('reason')}"
        row["failed criteria"] = ", ".join(f"{k} {v}" for k, v in (s.get("failed_criteria") or {}).items())
        rows.append(row)
    return rows


def tasks_table(results: list[dict]) -> list[dict]:
    """One row per task: passes out of trials and the criteria that failed in any trial."""
    from core.eval.tasks import pass_hat

    by_task: dict[str, dict] = {}
    for r in results:
        tx = r["transcript"]
        row = by_task.setdefault(tx["task"], {"task": tx["task"], "category": r["category"], "outcomes": [],
                                              "failed": set()})
        row["outcomes"].append(bool(r["passed"]))
        row["failed"] |= {c["name"] for c in r["checks"] if c["passed"] is False}
    out = []
    for row in by_task.values():
        n = len(row["outcomes"])
        item = {"task": row["task"], "category": row["category"], "passed": f"{sum(row['outcomes'])}/{n}"}
        item.update({f"pass^{k}": pass_hat({row["task"]: row["outcomes"]}, k) for k in range(1, n + 1)})
        item["failed criteria"] = "; ".join(sorted(row["failed"]))
        out.append(item)
    return out


def _render_messages(messages: list[dict]) -> None:
    import streamlit as st

    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            with st.chat_message("tool", avatar="🛠️"):
                st.caption(f"result of {m.get('name', '')}")
                st.code(_pretty(m.get("content")), language="json")
            continue
        with st.chat_message(m["role"]):
            if m.get("content"):
                st.markdown(m["content"])
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                st.markdown(f"🛠️ calls `{fn['name']}`")
                st.code(_pretty(fn["arguments"]), language="json")


def _pretty(text: Any) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=1)[:4000]
    except (TypeError, ValueError):
        return str(text)[:4000]


def _diff_rows(diff: list[dict]) -> list[dict]:
    return [{"path": d["path"], "before": json.dumps(d["before"], ensure_ascii=False),
             "after": json.dumps(d["after"], ensure_ascii=False)} for d in diff]


def render_trial(row: dict) -> None:
    """One trial: criteria, transcript with tool calls, state diffs."""
    import streamlit as st

    tx = row["transcript"]
    st.caption(f"task {tx['task']} · trial {tx['trial']} · {row['category']} · ended by {tx.get('ended')}")
    with st.expander("Customer instructions"):
        st.text(tx.get("goal") or "")
    failed = [c for c in row["checks"] if c["passed"] is False]
    for c in failed:
        st.error(f"{c['kind']}: {c['name']} — {c['reason']}")
    if not failed:
        st.success("every criterion held")
    _render_messages(tx.get("messages") or [])
    left, right = st.columns(2)
    left.markdown("**State changes (agent vs initial)**")
    left.dataframe(_diff_rows(tx.get("state_diff") or []), hide_index=True, width="stretch")
    right.markdown("**Final state vs gold** (before = gold, after = agent)")
    right.dataframe(_diff_rows(tx.get("gold_diff") or []), hide_index=True, width="stretch")


def render_task_runs(customer: str | None = None) -> None:
    """Scorecard tab for task runs."""
    import streamlit as st

    from core.eval import store as es

    names = task_customers()
    if not names:
        st.info("No client has a tool environment (customers/<name>/tools.py).")
        return
    customer = customer if customer in names else st.selectbox("Client with tools", names, key="tk_customer")
    runs = task_runs(customer)
    st.caption(f"Run one: `python -m core.eval run --customer {customer} --model MODEL --simulator MODEL "
               "--trials 4` (`--model @oracle` replays the gold actions).")
    if not runs:
        st.info(f"No task runs for {customer} yet.")
        return
    st.dataframe(runs_table(runs), hide_index=True, width="stretch")
    run_id = st.selectbox("Run", [r["id"] for r in runs], key="tk_run")
    results = es.results(run_id)
    if not results:
        st.warning("This run scored no trial (see 'tool calling' above).")
        return
    st.dataframe(tasks_table(results), hide_index=True, width="stretch")
    only_failed = st.toggle("Only failed trials", value=True, key="tk_failed")
    shown = [r for r in results if not (only_failed and r["passed"])] or results
    marks = {r["scenario"]: "✅ " if r["passed"] else "❌ " for r in shown}
    sid = st.selectbox("Trial", list(marks), key="tk_trial", format_func=lambda s: marks[s] + s)
    render_trial(next(r for r in shown if r["scenario"] == sid))


def render_task_run_form(customer: str, models: list[str]) -> str | None:
    """Run tab: start a task run (pass^k) for a client with tasks; returns the job id when started."""
    import streamlit as st

    from core import preflight
    from core.eval import jobs as eval_jobs
    from core.eval import tasks as tk

    if not tk.has_tasks(customer):
        return None
    st.subheader(f"Task run on {customer}'s tools (pass^k)")
    with st.form("start_task_run"):
        c1, c2 = st.columns(2)
        picked = c1.selectbox("Agent", ["@oracle", *models], key="trun_model",
                              help="@oracle replays each task's gold actions (a check of the environment)")
        typed = c2.text_input("…or a LiteLLM model string / OpenAI-compatible URL", key="trun_typed")
        simulator = c1.text_input("Customer simulator model (empty: the scripted simulator)", key="trun_sim")
        split = c2.selectbox("Split", ["all", "train", "test"], key="trun_split")
        trials = c1.slider("Trials per task (pass^1..pass^k)", 1, tk.MAX_TRIALS, 1, key="trun_trials")
        concurrency = c2.slider("Concurrency", 1, 32, 8, key="trun_conc")
        go = st.form_submit_button("Start task run")
    if not go:
        return None
    try:
        job = eval_jobs.start_tasks(typed.strip() or picked, customer, trials=trials,
                                    split=None if split == "all" else split, simulator=simulator.strip() or None,
                                    concurrency=concurrency)
    except preflight.PreflightError as exc:
        for p in exc.problems:
            st.error(f"{p.what}\n\n**Fix:** {p.fix}")
        return None
    st.success(f"Started task job {job}; progress below, results in the Tasks tab.")
    return job


# ---------------------------------------------------------------- sandbox on an environment

def sandbox_trial(customer: str, model: str, task_id: str | None = None) -> Any:
    """A live conversation on the client's environment (the tester plays the customer)."""
    from core.eval import agents as ag
    from core.eval import tasks as tk
    from core.eval import tools as tl

    env = tl.load_environment(customer)
    task = next((t for t in tk.load_tasks(customer) if t.id == task_id), None) if task_id else None
    task = task or tk.Task(id="sandbox", instructions="(a tester plays the customer)")
    settings = tk.TaskSettings(model=model, customer=customer)
    agent = ag.agent_factory(settings, env)(task, 0)
    return tk.Trial(task, env, agent, lambda conv: tk.AgentTurn(text=tk.END_TOKEN), settings, 0,
                    tk.policy_for(customer))


def render_tool_sandbox(models: list[str]) -> None:
    """Sandbox section: pick a client environment and a model, then play the customer."""
    import streamlit as st

    names = task_customers()
    if not names:
        st.info("No client has a tool environment (customers/<name>/tools.py).")
        return
    c1, c2, c3 = st.columns(3)
    customer = c1.selectbox("Environment", names, key="tsb_customer")
    model = c2.selectbox("Agent", [*models, "@oracle"], key="tsb_model")
    from core.eval import tasks as tk

    try:
        task_ids = ["(free play)"] + [t.id for t in tk.load_tasks(customer)]
    except Exception as exc:  # e.g. tau_retail without ../shared/data
        st.warning(str(exc))
        return
    task_id = c3.selectbox("Start from task", task_ids, key="tsb_task")
    key = (customer, model, task_id)
    reset = st.button("Reset state", key="tsb_reset")
    if st.session_state.get("tsb_key") != key or reset:
        st.session_state.pop("tsb_session", None)  # the next message starts a new saved session
        try:
            start_from = None if task_id == "(free play)" else task_id
            st.session_state["tsb_trial"] = sandbox_trial(customer, model, start_from)
        except Exception as exc:
            st.error(f"cannot start the environment: {exc}")
            return
        st.session_state["tsb_key"] = key
    trial = st.session_state["tsb_trial"]
    if task_id != "(free play)":
        with st.expander("What this customer wants (task instructions)"):
            st.text(trial.task.instructions)
    with st.form("tsb_form", clear_on_submit=True):  # not st.chat_input: the page has its own chat box
        said = st.text_input("Write as the customer", key="tsb_input")
        sent = st.form_submit_button("Send")
    if sent and said.strip():
        from core import tool_sandbox

        if not st.session_state.get("tsb_session"):  # saved from the first message on
            session, _ = tool_sandbox.start(customer, model, None if task_id == "(free play)" else task_id,
                                            tester=st.session_state.get("tester", ""), trial=trial)
            st.session_state["tsb_session"] = session.id
        tool_sandbox.send(st.session_state["tsb_session"], trial, said)
    if st.session_state.get("tsb_session"):
        sid = st.session_state["tsb_session"]
        st.caption(f"Saved as sandbox session #{sid[:6]}: open it with `?session={sid}` (or the session picker) "
                   "to flag replies, rate it and make a regression scenario.")
    _render_messages(trial.messages)
    for g in trial.glitches:
        st.error(f"{g['kind']}: {g['message']}")
    st.markdown("**State changes so far**")
    st.dataframe(_diff_rows(trial.session.changes()), hide_index=True, width="stretch")


def show_tool_message(message: Any) -> None:
    """A stored tool call (core.tool_sandbox) with its arguments and result."""
    import streamlit as st

    from core.tool_sandbox import tool_call

    call = tool_call(message)
    with st.chat_message("tool", avatar="🛠️"):
        st.markdown(f"🛠️ `{call['name']}`" + (" · **error**" if call.get("error") else ""))
        st.code(json.dumps(call["arguments"], ensure_ascii=False, indent=1), language="json")
        st.code(_pretty(call.get("result")), language="json")


def render_tool_session(session: Any, show_message: Any) -> None:
    """A reopened tool session on the Sandbox page: stored turns (flaggable), tool calls, state, continue."""
    import streamlit as st

    from core import sandbox
    from core import tool_sandbox

    key = f"tsb_restored_{session.id}"
    if key not in st.session_state:
        try:
            st.session_state[key] = tool_sandbox.restore(session.id)
        except Exception as exc:  # e.g. the environment's files are gone
            st.error(f"cannot rebuild the environment of this session: {exc}")
            return
    trial = st.session_state[key]
    st.caption(f"Tool environment **{session.context['environment']}** · task "
               f"{session.context.get('task') or 'free play'} · agent {session.models[0]}")
    with st.form(f"tsb_more_{session.id}", clear_on_submit=True):
        said = st.text_input("Write as the customer", key=f"tsb_more_input_{session.id}")
        sent = st.form_submit_button("Send")
    if sent and said.strip():
        tool_sandbox.send(session.id, trial, said)
    for m in sandbox.messages(session.id):
        (show_tool_message if m.role == "tool" else show_message)(m)
    st.markdown("**State changes so far**")
    st.dataframe(_diff_rows(trial.session.changes()), hide_index=True, width="stretch")
