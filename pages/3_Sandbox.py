"""Sandbox: testers chat with one or two models side by side and flag what breaks.

    streamlit run app.py    # then open "Sandbox" in the sidebar

Thin page: sessions, messages, flags, ratings and stats live in core.sandbox (SQLite);
model calls go through core.llm. Reopen any past session from the sidebar to continue it.
"""
from __future__ import annotations

import json

import streamlit as st

from core import llm, registry, sandbox

st.set_page_config(page_title="Sandbox · CSForge", page_icon="🧪", layout="wide")
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


def model_options() -> dict[str, str]:
    """registry name -> label showing whether it can be called now and why not."""
    reg = registry.load()
    for err in reg.errors:
        st.sidebar.warning(err)
    labels = {}
    for name, entry in reg.entries.items():
        ok, why = registry.availability(entry)
        labels[name] = f"{name} · {entry.type}" + ("" if ok else f" (unavailable: {why})")
    return labels


def new_session_form() -> None:
    models, customers = model_options(), customer_names()
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
        context = st.text_area("Context (JSON: what the agent knows, e.g. the order)", "{}", key="context")
        if st.form_submit_button("Start session", type="primary"):
            try:
                ctx = json.loads(context or "{}")
                session = sandbox.create_session([other.strip() or a, None if b == NONE else b],
                                                 customer=None if customer == NONE else customer,
                                                 tester=tester, context=ctx or None)
            except (json.JSONDecodeError, sandbox.SandboxError) as exc:
                st.error(f"cannot start: {exc}")
            else:
                st.session_state["session_id"] = session.id
                st.session_state.pop("pick", None)
                st.rerun()


def pick_session() -> sandbox.Session | None:
    sessions = {s.id: s for s in sandbox.list_sessions()}
    current = st.session_state.get("session_id")
    ids = [NEW, *sessions]
    choice = st.sidebar.selectbox("Session", ids, index=ids.index(current) if current in ids else 0,
                                  format_func=lambda i: sessions[i].label if i in sessions else i, key="pick")
    st.session_state["session_id"] = None if choice == NEW else choice
    return sessions.get(choice)


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
        if m.role == "assistant" and m.error:
            st.error(f"call failed: {m.error}")
        else:
            st.markdown(m.content or "*(empty reply)*")
        if m.role == "assistant":
            st.caption(usage_line(m))
            flag_form(m)


def stream_reply(session: sandbox.Session, model: str) -> None:
    """Stream one model's answer into the page, then store it with its usage."""
    holder: dict = {}

    def pieces():
        for item in llm.stream_chat(model, sandbox.history(session.id, model), context=session.context,
                                    customer=session.customer):
            if isinstance(item, str):
                yield item
            else:
                holder["completion"] = item

    with st.chat_message("assistant"):
        st.write_stream(pieces())
    sandbox.add_reply(session.id, model, holder["completion"])


def chat(session: sandbox.Session) -> None:
    cols = st.columns(len(session.models))
    for col, model in zip(cols, session.models):
        with col:
            st.subheader(model)
            for m in sandbox.transcript(session.id, model):
                show_message(m)
    text = st.chat_input("Message to the agent" + ("s" if len(session.models) > 1 else ""))
    if text:
        sandbox.add_user_message(session.id, text)
        for col, model in zip(cols, session.models):
            with col:
                with st.chat_message("user"):
                    st.markdown(text)
                stream_reply(session, model)
        st.rerun()


def session_tools(session: sandbox.Session) -> None:
    with st.sidebar:
        st.divider()
        rating = st.radio("Rate this session (1 = broken, 5 = flawless)", [1, 2, 3, 4, 5], horizontal=True,
                          index=session.rating - 1 if session.rating else None, key=f"rating-{session.id}")
        if st.button("Save rating", disabled=rating is None):
            sandbox.rate(session.id, rating)
            st.rerun()
        st.download_button("Export session (JSONL)", sandbox.export_jsonl(session.id),
                           file_name=f"sandbox-{session.id}.jsonl", mime="application/jsonl")


def stats() -> None:
    rows = sandbox.model_stats()
    with st.expander("Error rate per model (all sessions)", expanded=not st.session_state.get("session_id")):
        if not rows:
            st.info("No agent replies yet.")
            return
        st.dataframe([{"model": r["model"], "sessions": r["sessions"], "agent turns": r["agent_turns"],
                       "flagged turns": r["flagged_turns"], "error rate": f"{r['error_rate']:.0%}",
                       "call errors": r["call_errors"], "mean latency s": round(r["mean_latency_s"] or 0, 2),
                       "cost $": round(r["cost_usd"] or 0, 5),
                       "by category": ", ".join(f"{k}: {v}" for k, v in r["by_category"].items())}
                      for r in rows], hide_index=True, width="stretch")


session = pick_session()
if session is None:
    new_session_form()
    st.info("Start a session in the sidebar, or reopen a past one. Try to break the agent: "
            "ask for things outside the policy, switch language, request a human, probe for internals.")
else:
    caption = [f"customer **{session.customer}**" if session.customer else "no customer"]
    caption += [f"tester {session.tester}"] if session.tester else []
    caption += [f"context: `{json.dumps(session.context, ensure_ascii=False)}`"] if session.context else []
    st.caption(" · ".join(caption))
    session_tools(session)
    chat(session)
stats()

with st.expander("🛠️ Play the customer on a client's tool environment (tool calls and state diff inline)"):
    from core.eval.tools_view import render_tool_sandbox

    render_tool_sandbox(list(registry.load().entries))
