"""Scorecard: start CS-eval runs, compare models, follow a model's trend, read transcripts with
their failed checks, diff two runs, gate releases, and turn flagged chats into scenarios.
Widgets only; the numbers come from core.eval (report, jobs, gate, loop)."""
import pandas as pd
import plotly.express as px
import streamlit as st

from core import preflight, registry, retirement
from core.eval import gate as eval_gate, jobs as eval_jobs, loop as eval_loop, report as eval_report, store as eval_store
from core.eval import calibration_view
from core.dataset import list_customers
from core.ui import show_checks, sidebar_nav

st.set_page_config(page_title="Scorecard · CSForge", page_icon="🧪", layout="wide")
sidebar_nav()
st.title("Scorecard")

customers = [c.name for c in list_customers()]
with st.sidebar:
    customer = st.selectbox("Customer", customers, key="sc_customer")
reg = registry.load()  # once per run: every tab below reads this copy
models = reg.names()
retirement.show(reg.entries.values())  # retiring models: date + replacement
eval_report.reap_interrupted()  # a run whose process died is resumable, not "running" forever
runs = eval_store.runs(customer=customer)
finished = [r for r in runs if r["status"] == "finished"]


def run_label(run_id: str) -> str:
    row = next((r for r in runs if r["id"] == run_id), None)
    if not row:
        return run_id
    s = row["summary"] or {}
    rate = f"{s['pass_rate']:.0%}" if s.get("pass_rate") is not None else row["status"]
    return f"{row['model']} · {rate} · {row['id']}"


def pct(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    for c in cols:
        df[c] = df[c].map(lambda x: None if x is None or pd.isna(x) else round(100 * x, 1))
    return df


def show_transcript(row: dict) -> None:
    """A scenario's turns with every check: failed in red, skipped (not judged) grey, passed counted."""
    tx = row["transcript"]
    st.caption(f"{row['category']} · {'passed' if row['passed'] else 'failed'} · persona: {tx.get('persona') or '-'}"
               f" · goal: {tx.get('goal') or '-'}")
    if row["error"]:
        st.error(f"Glitch: {row['error']}")
    for turn in tx.get("turns", []):
        st.chat_message("user").write(turn["user"] + ("  _(simulated)_" if turn.get("simulated") else ""))
        st.chat_message("assistant").write(turn["reply"] or "∅ (empty reply)")
        show_checks(turn["checks"])
        st.caption(f"{turn['latency_s']:.2f}s · {turn['input_tokens']}+{turn['output_tokens']} tokens"
                   + (" · cached" if turn.get("cached") else ""))
    show_checks(tx.get("conversation_checks", []), prefix="conversation · ")


@st.cache_data(ttl=60, show_spinner=False)
def suite_choices(customer: str) -> list[str]:
    """Categories, then scenario ids, of the customer's suite (for a partial run)."""
    from core.eval.suite import load_suite

    try:
        suite = load_suite(customer)
    except Exception:  # the Run tab reports a broken suite when a run starts
        return []
    return sorted({sc.category for sc in suite.scenarios}) + [sc.id for sc in suite.scenarios]


tab_cmp, tab_run, tab_tx, tab_diff, tab_gate, tab_loop, tab_tasks = st.tabs(
    ["Compare", "Run", "Transcripts", "Diff", "Release gate", "Human loop", "Tasks (tools, pass^k)"])

# ---------------------------------------------------------------- compare + trend
with tab_cmp:
    rows = eval_report.compare(customer)
    if not finished:
        st.info(f"No finished runs for {customer} in this console yet: start one in the Run tab.")
    shipped = eval_report.registry_scores(customer)
    if shipped:
        st.markdown("**Scores recorded in registry.yaml** (the same figures Home shows; their runs are not "
                    "stored in this console, so rerun a model to drill into its transcripts)")
        st.dataframe(pct(pd.DataFrame(shipped), ["pass_rate", "error_rate"]).rename(
            columns={"pass_rate": "pass rate %", "error_rate": "error rate %"}), hide_index=True, width="stretch")
    if shipped:
        st.markdown("**Runs stored in this console**")
    table = pct(pd.DataFrame(rows, columns=eval_report.COMPARE_COLUMNS), ["pass_rate", "error_rate"]).rename(
        columns={"pass_rate": "pass rate %", "error_rate": "error rate %"})
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("The baseline generic model is always listed; a blank row means it has no run on this suite yet. "
               "Error rate = agent turns with a glitch or a failed undesired-behaviour check / all agent turns.")
    with st.expander("What this scorecard can catch (calibration)", expanded=False):
        calibration_view.render(customer)
    cats = eval_report.by_category(customer)
    if cats:
        st.plotly_chart(px.bar(pd.DataFrame(cats), x="category", y="pass_rate", color="model", barmode="group",
                               title="Pass rate by category", range_y=[0, 1]), key="cats")
        scored = pd.DataFrame([r for r in rows if r["run_id"]])
        c1, c2, c3 = st.columns(3)
        c1.plotly_chart(px.bar(scored, x="model", y="error_rate", title="Error rate"), key="err")
        c2.plotly_chart(px.bar(scored, x="model", y=["latency_p50_s", "latency_p95_s"], barmode="group",
                               title="Latency (s)"), key="lat")
        free = eval_report.cost_note(rows)
        if free:  # a bar chart of zeros draws a meaningless -1..1 axis
            c3.info(free)
        else:
            c3.plotly_chart(px.bar(scored, x="model", y="cost_per_session_usd", title="Cost per session ($)"),
                            key="cost")
        model = st.selectbox("Trend of", sorted({r["model"] for r in finished}), key="trend_model")
        trend = pd.DataFrame(eval_report.trend(model, customer))
        trend["when"] = pd.to_datetime(trend["created_at"], unit="s")
        st.plotly_chart(px.line(trend, x="when", y=["pass_rate", "error_rate"], markers=True,
                                hover_data=["run_id", "suite_hash"], title=f"{model} over its runs"), key="trend")

    cells = eval_report.grid(customer)
    if cells:
        st.subheader("Test × model")
        grid = pd.DataFrame(cells).set_index("scenario")
        marks = {"pass": "✅ pass", "fail": "❌ fail", None: "—"}
        shown_grid = grid.reset_index().apply(lambda col: col if col.name in ("scenario", "category")
                                              else col.map(lambda v: marks.get(v, "—")))
        event = st.dataframe(shown_grid, hide_index=True, width="stretch", key="grid", on_select="rerun",
                             selection_mode="single-cell")
        st.caption("Click a cell to open that test's transcript for that model, with every check.")
        picked_cell = next(iter(event.selection.cells), None) if event else None
        if picked_cell and picked_cell != st.session_state.get("grid_applied"):
            st.session_state["grid_applied"] = picked_cell  # a click moves the pickers; they stay usable
            row_pos, column = picked_cell
            st.session_state["grid_scenario"] = shown_grid.iloc[row_pos]["scenario"]
            if column in grid.columns and column != "category":
                st.session_state["grid_model"] = column
        g1, g2 = st.columns(2)
        cell_scenario = g1.selectbox("Open a cell: test", list(grid.index), key="grid_scenario",
                                     format_func=lambda sid: ("❌ " if "fail" in set(grid.loc[sid]) else "✅ ") + sid)
        cell_model = g2.selectbox("…and model", [c for c in grid.columns if c != "category"], key="grid_model")
        run = eval_report.latest_runs(customer)[cell_model]
        row = eval_report.scenario(run["id"], cell_scenario)
        if row is None:
            st.caption(f"{cell_model} has no result for {cell_scenario} (its run played a subset).")
        else:
            show_transcript(row)


# ---------------------------------------------------------------- start a run, live progress
with tab_run:
    with st.form("start_run"):
        options = ["(type below)"] + models
        wanted = st.query_params.get("model") or st.session_state.get("model")  # sent from the Factory
        picked = st.selectbox("Model (registry)", options, key="run_model",
                              index=options.index(wanted) if wanted in options else min(1, len(models)))
        typed = st.text_input("…or a LiteLLM model string / OpenAI-compatible URL", key="run_typed")
        suite_path = st.text_input("Suite file (empty: generic + the customer's)", key="run_suite")
        only = st.multiselect("Only these categories or scenarios (empty: the whole suite)", suite_choices(customer),
                              key="run_only")
        latency = st.number_input("Latency budget per turn, s (0: the suite's)", 0.0, 3600.0, 0.0, 5.0,
                                  key="run_latency", help="a CPU model is slow: raise it so latency alone fails nothing")
        concurrency = st.slider("Concurrency", 1, 32, 8, key="run_conc")
        judge = st.text_input("Judge model (optional)", key="run_judge")
        go = st.form_submit_button("Start run")
    if go:
        model = typed.strip() or (picked if picked != "(type below)" else "")
        extra = (["--only", ",".join(only)] if only else []) + (["--latency-budget", str(latency)] if latency else [])
        try:
            job = eval_jobs.start(model, customer, suite_path.strip() or None, concurrency, judge.strip() or None,
                                  extra=extra)
        except preflight.PreflightError as exc:
            for p in exc.problems:
                st.error(f"{p.what}\n\n**Fix:** {p.fix}")
        else:
            st.success(f"Started job {job}; progress below.")
    from core.eval.tools_view import render_task_run_form

    render_task_run_form(customer, models)
    stopped = [r for r in runs if r["status"] == "interrupted"]
    for r in stopped:
        c1, c2 = st.columns([4, 1])
        c1.write(f"Interrupted: **{r['model']}** · `{r['id']}` · {len(eval_store.done_scenarios(r['id']))} scenarios done")
        if c2.button("Resume", key=f"resume_{r['id']}"):
            st.success(f"Resuming {r['id']} as job {eval_jobs.resume(r['id'])}.")
            st.rerun()

    any_running = any(j["status"] == "running" for j in eval_jobs.recent(5))

    @st.fragment(run_every=2 if any_running else None)  # redraws only while a run is going
    def live_jobs() -> None:
        recent = eval_jobs.recent(5)
        if any(j["status"] == "running" for j in recent) != any_running:
            st.rerun(scope="app")
        for job in recent:
            p = job["progress"] or {}
            done, total = p.get("done") or 0, p.get("total") or 0
            st.write(f"**{job['name']}** — {job['status']} · run `{p.get('run_id')}`")
            st.progress(done / total if total else 0.0, text=f"{done}/{total or '?'} {p.get('unit', 'scenarios')}")
            if job["status"] == "running" and st.button("Stop", key=f"stop_{job['id']}"):
                eval_jobs.stop(job["id"])
            if job["status"] != "finished" and job["log_tail"]:
                st.code(job["log_tail"], language=None)
    live_jobs()

# ---------------------------------------------------------------- transcript drill-down
with tab_tx:
    if not runs:
        st.info("No runs yet.")
    else:
        run_id = st.selectbox("Run", [r["id"] for r in runs], format_func=run_label, key="tx_run")
        results = eval_store.results(run_id)
        only_failed = st.toggle("Only failed scenarios", value=True, key="tx_failed")
        shown = [r for r in results if not (only_failed and r["passed"])] or results
        if shown:
            sid = st.selectbox("Scenario", [r["scenario"] for r in shown], key="tx_scenario",
                               format_func=lambda s: ("✅ " if next(r for r in shown if r["scenario"] == s)["passed"]
                                                      else "❌ ") + s)
            show_transcript(next(r for r in shown if r["scenario"] == sid))

# ---------------------------------------------------------------- diff of two runs
with tab_diff:
    if len(runs) < 2:
        st.info("Two runs are needed for a diff.")
    else:
        ids = [r["id"] for r in runs]
        a = st.selectbox("Run A (before)", ids, index=1, format_func=run_label, key="diff_a")
        b = st.selectbox("Run B (after)", ids, index=0, format_func=run_label, key="diff_b")
        d = eval_report.diff(a, b)
        c1, c2, c3 = st.columns(3)
        c1.metric("Newly failing", len(d["newly_failing"]))
        c2.metric("Newly passing", len(d["newly_passing"]))
        c3.metric("Still failing", len(d["still_failing"]))
        for sid in d["newly_failing"]:
            st.error(f"**{sid}** — " + "; ".join(d["why"][sid] or ["glitch"]))
        if d["newly_passing"]:
            st.success("Newly passing: " + ", ".join(d["newly_passing"]))

# ---------------------------------------------------------------- release gate
with tab_gate:
    entries = reg.entries.values()
    prod = eval_gate.production_model(customer)
    st.write(f"Production model for {customer}: **{prod or 'none yet'}**")
    cands = [e.name for e in entries if e.status == "candidate" and e.customer in (customer, None)]
    if not cands:
        st.info("No candidate models for this customer in the registry.")
    else:
        cand = st.selectbox("Candidate", cands, key="gate_cand")
        tol = st.number_input("Tolerance (pass/error rate)", 0.0, 1.0, 0.02, 0.01, key="gate_tol")
        reason = st.text_input("Override reason (promotes even if worse; recorded)", key="gate_reason")
        st.caption("The gate compares finished runs of the current suite; a missing one is started as a "
                   "background run (Run tab) instead of blocking this page.")
        if st.button("Compare and promote", key="gate_go"):
            dec = eval_gate.promote(cand, customer, tolerance=tol, override_reason=reason.strip() or None,
                                    run_missing=False)
            st.dataframe(pd.DataFrame([{"model": dec.candidate, **dec.as_dict()["candidate_summary"]},
                                       {"model": dec.production, **dec.as_dict()["production_summary"]}]),
                         hide_index=True)
            for r in dec.reasons:
                st.error(r)
            for model in [m for m in (cand, prod) if m and any(r.startswith(f"{m} has no finished run")
                                                                 for r in dec.reasons)]:
                try:
                    st.info(f"Started a run of {model}: job {eval_jobs.start(model, customer)} (Run tab).")
                except preflight.PreflightError as exc:
                    st.error(str(exc))
            (st.success if dec.promoted else st.warning)("Promoted." if dec.promoted else "Promotion refused.")
    history = eval_gate.history(customer)
    if history:
        st.dataframe(pd.DataFrame([{k: h.get(k) for k in ("decided_at", "candidate", "production", "promoted",
                                                            "reasons", "override_reason")} for h in history]),
                     hide_index=True, width="stretch")

# ---------------------------------------------------------------- human loop
with tab_loop:
    flagged = eval_loop.flagged_sessions(customer)
    if not flagged:
        st.info("No flagged sandbox sessions for this customer.")
    for s in flagged:
        c1, c2 = st.columns([4, 1])
        c1.write(f"**{s['title']}** · {s['models']} · {s['flags']} flag(s) · `{s['id']}`")
        if c2.button("Make regression scenario", key=f"reg_{s['id']}"):
            scenario, path = eval_loop.add_regression(s["id"])
            st.success(f"Added scenario {scenario.id} to {path.name}")
    rep = eval_loop.agreement(customer)
    st.subheader("Human flags vs automatic checks")
    if rep["replies"]:
        c1, c2, c3 = st.columns(3)
        c1.metric("Agent replies compared", rep["replies"])
        c2.metric("Agreement", f"{rep['agreement']:.0%}")
        c3.metric("Cohen's kappa", rep["kappa"])
        st.dataframe(pd.DataFrame([{"flag": k, **v} for k, v in rep["by_category"].items()]), hide_index=True)
        st.dataframe(pd.DataFrame([{**m, "human": ", ".join(m["human"]), "auto": ", ".join(m["auto"])}
                                   for m in rep["messages"] if m["human"] or m["auto"]]), hide_index=True)
    else:
        st.caption("No rated or flagged sandbox sessions yet.")

with tab_tasks:  # task scenarios on a client's tool environment: core/eval/tools_view.py
    from core.eval.tools_view import render_task_runs

    render_task_runs()
