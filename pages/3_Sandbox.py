"""Sandbox: testers chat with one or two models side by side and flag what breaks.

    streamlit run app.py    # then open "Sandbox" in the sidebar; a session's link is ?session=ID

Thin page: sessions, messages, flags, ratings and stats live in core.sandbox (SQLite); replies
come from core.sandbox_replies (parallel, streamed, stoppable). The open session is in the URL,
so a reload, a page switch or a shared link lands on the same session.
"""
from __future__ import annotations

import json

import streamlit as st

from core import registry, retirement, sandbox, sandbox_replies
from core.ui import sidebar_nav

st.set_page_config(page_title="Sandbox · CSForge", page_icon="🧪", layout="wide")
sidebar_nav()
st.title("Sandbox")
NEW = "➕ New session"
NONE = "—"


@st.cache_resource(ttl=300, show_spinner=False)
def customer_names() -> dict[str, str]:
    """name -> title of every customer folder (core.dataset imports torch: cache it)."""
    from core.dataset import list_customers

    try:
        return {c.name: f"{c.title} ({c.language})" for c in list_customers()}
    except Exception as exc:  # a broken customer folder must not take the sandbox down
        st.warning(f"customers could not be listed: {exc}")
        return {}


def model_options(reg: registry.Registry) -> dict[str, str]:
    """registry name -> label showing whether it can be called now and why not."""
    for err in reg.errors:
        st.sidebar.warning(err)
    labels = {}
    for name, entry in reg.entries.items():
        ok, why = registry.availability(entry)
        labels[name] = f"{name} · {entry.type}" + ("" if ok else f" (unavailable: {why})")
    return labels


def open_session(session_id: str | None) -> None:
    """The URL is the one place that says which session is open."""
    if session_id:
        st.query_params["session"] = session_id
    else:
        st.query_params.pop("session", None)


def new_session_form(reg: registry.Registry) -> None:
    models, customers = model_options(reg), customer_names()
    with st.sidebar.form("new_session"):
        wanted = st.query_params.get("model") or st.session_state.get("model")  # sent from Factory/Scorecard
        names = list(models)
        a = st.selectbox("Model", names, index=names.index(wanted) if wanted in names else 0,
                         format_func=models.get, key="model_a")
        other = st.text_input("…or a LiteLLM model string / OpenAI-compatible URL", key="model_other")
        b = st.selectbox("Compare with", [NONE, *models], format_func=lambda n: models.get(n, n), key="model_b")
        customer = st.selectbox("Customer", [NONE, *customers], format_func=lambda n: customers.get(n, n),
                                key="customer", help="a prompt model uses this client's policy")
        tester = st.text_input("Tester", key="tester")
        title = st.text_input("Session name", key="title", placeholder="default: tester · date time")
        context = st.text_area("Context (JSON: what the agent knows, e.g. the order)", "{}", key="context")
        if st.form_submit_button("Start session", type="primary"):
            try:
                ctx = json.loads(context or "{}")
                if not isinstance(ctx, dict):
                    raise sandbox.SandboxError("the context must be a JSON object, e.g. {\"order\": \"A1\"}")
                session = sandbox.create_session([other.strip() or a, None if b == NONE else b],
                                                 customer=None if customer == NONE else customer,
                                                 tester=tester, title=title, context=ctx or None)
            except (json.JSONDecodeError, sandbox.SandboxError) as exc:
                st.error(f"cannot start: {exc}")
            else:
                open_session(session.id)
                st.rerun()


def pick_session() -> sandbox.Session | None:
    sessions = {s.id: s for s in sandbox.list_sessions()}
    current = st.query_params.get("session")
    if current and current not in sessions:
        try:
            sessions[current] = sandbox.get_session(current)  # older than the picker's list
        except sandbox.SandboxError as exc:
            st.warning(f"{exc}; pick another session or start a new one")
            open_session(current := None)
    ids = [NEW, *sessions]
    st.session_state["pick"] = current or NEW

    def picked() -> None:
        choice = st.session_state["pick"]
        open_session(None if choice == NEW else choice)

    st.sidebar.selectbox("Session", ids, format_func=lambda i: sessions[i].label if i in sessions else i,
                         key="pick", on_change=picked)
    return sandbox.get_session(current) if current else None  # get_session loads the context too


def usage_line(m: sandbox.Message) -> str:
    return (f"{m.latency_s:.2f} s · {m.input_tokens} in / {m.output_tokens} out tokens · "
            f"${m.cost_usd:.5f}")


def flag_form(m: sandbox.Message) -> None:
    for f in m.flags:
        st.warning(f.category + (f": {f.comment}" if f.comment else ""), icon="🚩")
    with st.expander("🚩 Flag this reply"):
        with st.form(f"flag-{m.id}", clear_on_submit=True):
            category = st.selectbox("Category", sandbox.FLAG_CATEGORIES, key=f"cat-{m.id}")
            comment = st.text_input("What went wrong?", key=f"comment-{m.id}")
            if st.form_submit_button("Flag", key=f"flag-btn-{m.id}"):
                sandbox.flag(m.id, category, comment)
                st.rerun()


def show_message(m: sandbox.Message) -> None:
    with st.chat_message(m.role):
        if m.role == "assistant" and m.error == sandbox_replies.STOPPED:
            st.markdown(m.content or "*(stopped before any text)*")
            st.caption("⏹ stopped by the tester")
        elif m.role == "assistant" and m.error == sandbox.INTERRUPTED:
            st.markdown(m.content or "*(no text yet)*")
            st.caption(f"⚠ {m.error}")
        elif m.role == "assistant" and m.error:
            st.error(f"call failed: {m.error}")
        else:
            st.markdown(m.content or "*(empty reply)*")
        if m.role == "assistant":
            st.caption(usage_line(m))
            flag_form(m)


def generate(session: sandbox.Session, cols: list, models: list[str]) -> None:
    """Stream every waiting model's reply into its column at once; Stop (a rerun) ends them."""
    st.button("⏹ Stop", key="stop", help="stop the replies; what was said so far is kept",
              on_click=lambda: st.session_state.update(stopping=True))
    holders, texts = {}, {m: "" for m in models}
    for col, model in zip(cols, session.models):
        if model in texts:
            with col, st.chat_message("assistant"):
                holders[model] = st.empty()
    replies = sandbox_replies.stream(session.id, models, cut_short_as=sandbox.INTERRUPTED,
                                     max_tokens=int(st.session_state.get("max_tokens", 256)))
    try:
        for model, item in replies:
            if isinstance(item, str):
                texts[model] += item
            for name, holder in holders.items():  # a tick re-draws too, so a Stop click is noticed
                holder.markdown(texts[name] + " ▌")
    finally:
        replies.close()  # a Stop click interrupts the loop: the threads stop and keep the partial text
    st.rerun()


def chat(session: sandbox.Session) -> None:
    if st.session_state.pop("stopping", False):  # the interrupted run stores its partial replies as it unwinds
        sandbox_replies.wait_settled(session.id)
        sandbox.relabel_last_replies(session.id, sandbox.INTERRUPTED, sandbox_replies.STOPPED)
    text = st.chat_input("Message to the agent" + ("s" if len(session.models) > 1 else ""))
    sent = False
    if text is not None:
        try:
            sandbox.add_user_message(session.id, text)
            sent = True
        except sandbox.SandboxError as exc:
            st.warning(str(exc))
    cols = st.columns(len(session.models))
    for col, model in zip(cols, session.models):
        with col:
            st.subheader(model)
            for m in sandbox.transcript(session.id, model):
                show_message(m)
            with st.expander("What the model receives (system prompt, context, history)"):
                st.json(sandbox_replies.sent_messages(session.id, model), expanded=True)
    waiting = list(sandbox.pending(session.id))
    if sent or st.session_state.pop("retry", False):
        generate(session, cols, waiting)
    elif waiting:
        st.warning(f"The last message has no reply from {', '.join(waiting)} (the page was left mid-call?).")
        st.button("↻ Retry", key="retry_btn", on_click=lambda: st.session_state.update(retry=True))


def session_tools(session: sandbox.Session) -> None:
    with st.sidebar:
        st.number_input("Max tokens per reply", 16, 4096, 256, step=16, key="max_tokens")
        st.divider()
        rating = st.radio("Rate this session (1 = broken, 5 = flawless)", [1, 2, 3, 4, 5], horizontal=True,
                          index=session.rating - 1 if session.rating else None, key=f"rating-{session.id}")
        if st.button("Save rating", disabled=rating is None):
            sandbox.rate(session.id, rating)
            st.rerun()
        st.download_button("Export session (JSONL)", sandbox.export_jsonl(session.id),
                           file_name=f"sandbox-{session.id}.jsonl", mime="application/jsonl")
        make_scenario(session)


def make_scenario(session: sandbox.Session) -> None:
    flagged = any(m.flags for m in sandbox.messages(session.id))
    why = ("flag a reply first" if not flagged else
           "start the session with a customer: the scenario goes into its suite" if not session.customer else "")
    if st.button("Make a regression scenario", disabled=bool(why), help=why or "the first flagged reply "
                 "becomes a scenario in customers/<customer>/regressions.yaml"):
        from core.eval.loop import add_regression

        try:
            scenario, path = add_regression(session.id)
        except (ValueError, KeyError) as exc:
            st.error(f"cannot make a scenario: {exc}")
        else:
            st.success(f"scenario {scenario.id} written to {path.name}")


def stats() -> None:
    rows = sandbox.model_stats()
    with st.expander("Error rate per model (all sessions)", expanded=not st.query_params.get("session")):
        if not rows:
            st.info("No agent replies yet.")
            return
        st.dataframe([{"model": r["model"], "sessions": r["sessions"], "agent turns": r["agent_turns"],
                       "flagged turns": r["flagged_turns"], "error rate": f"{r['error_rate']:.0%}",
                       "call errors": r["call_errors"], "mean latency s": round(r["mean_latency_s"] or 0, 2),
                       "cost $": round(r["cost_usd"] or 0, 5),
                       "by category": ", ".join(f"{k}: {v}" for k, v in r["by_category"].items())}
                      for r in rows], hide_index=True, width="stretch")


reg = registry.load()  # once per run: the form, the notices and the tool sandbox read this copy
retirement.show(reg.entries.values())  # retiring models: date + replacement
session = pick_session()
if session is None:
    new_session_form(reg)
    st.info("Start a session in the sidebar, or reopen a past one. Try to break the agent: "
            "ask for things outside the policy, switch language, request a human, probe for internals.")
else:
    st.subheader(session.title)
    caption = [f"customer **{session.customer}**" if session.customer else "no customer"]
    caption += [f"tester {session.tester}"] if session.tester else []
    caption += [f"link: `?session={session.id}`"]
    st.caption(" · ".join(caption))
    if session.context:
        with st.expander("Context given to the agent", expanded=False):
            st.json(session.context)
    session_tools(session)
    from core import tool_sandbox

    if tool_sandbox.is_tool_session(session):  # played on a client's tools: calls inline, state replayed
        from core.eval.tools_view import render_tool_session

        render_tool_session(session, show_message)
    else:
        chat(session)
stats()

with st.expander("🛠️ Play the customer on a client's tool environment (tool calls and state diff inline)"):
    from core.eval.tools_view import render_tool_sandbox

    render_tool_sandbox(list(reg.entries))
