"""Data: browse a customer's conversations, their labels, handoff points, context and distributions."""
import streamlit as st

from core.dataset import customer_errors, filter_indices, load_dataset, printable, to_jsonl
from core.plots import export_html, export_png
from core.ui import chat_bubbles, pick_dataset, sidebar_nav

st.set_page_config(page_title="Data · CSForge", page_icon="📚", layout="wide")
sidebar_nav()
st.title("Data")

with st.sidebar:
    key = pick_dataset("data")
customer_name = key.split("/")[0] if key else st.session_state.get("data_customer")
for problem in customer_errors(None if key is None else customer_name):  # named, as on the home page
    st.error(problem)
if key is None:
    st.stop()
try:
    ds = load_dataset(key)
except Exception as exc:  # a client's dataset class may raise anything in __init__: say so, never crash
    st.error(f"dataset {key} cannot be loaded: {printable(exc if isinstance(exc, OSError) else f'{type(exc).__name__}: {exc}')}")
    st.stop()

if not len(ds) and ds.errors:
    st.error(f"dataset {key}: no valid conversation ({len(ds.errors)} bad records); first: {ds.errors[0]}")
if ds.errors:
    with st.expander(f"⚠️ {len(ds.errors)} bad records were left out (file, record, reason)"):
        st.dataframe([{"file": e.file, "record": e.where, "reason": e.reason} for e in ds.errors],
                     hide_index=True, width="stretch")

with st.sidebar:
    label_range = st.slider("Label range", 0.0, 1.0, (0.0, 1.0), step=0.05)
    human = st.radio("Needs a human", ["all", "yes", "no"], horizontal=True)
needs_human = {"all": None, "yes": True, "no": False}[human]
picked = filter_indices(ds, *label_range, needs_human=needs_human)

shown = ds.stats().iloc[picked]  # every figure below is about what the filters show
cols = st.columns(4)
cols[0].metric("Shown", f"{len(picked)} / {len(ds)}")
cols[1].metric("Good (label > threshold)", f"{shown['good'].mean():.0%}" if picked else "–",
               help=f"threshold {ds.good_threshold}; of the conversations shown")
cols[2].metric("Needs a human", f"{shown['needs_human'].mean():.0%}" if picked else "–",
               help="of the conversations shown")
# Callables: the files are built only when someone clicks, not on every rerun.
cols[3].download_button("Download filtered JSONL", lambda: to_jsonl(ds, picked),
                        file_name=f"{key.replace('/', '_')}.jsonl", mime="application/jsonl", disabled=not picked)

browse, figures, table, rules = st.tabs(["Conversations", "Distributions", "Table", "Rules"])
with browse:
    if not picked:
        st.info("No conversation matches these filters.")
    else:
        pos = st.number_input(f"Conversation (1–{len(picked)})", 1, len(picked), 1) - 1
        sample = ds[picked[pos]]
        left, right = st.columns([3, 2])
        with left:
            st.caption(f"id {sample.id} · label {sample.label:.2f} · "
                       + (f"human needed at message {sample.human_intervention_idx + 1}"
                          if sample.human_intervention_idx >= 0 else "no human needed"))
            chat_bubbles(sample.dialog, sample.human_intervention_idx)
        with right:
            st.markdown("**Context**")
            st.json(sample.context, expanded=2)
with figures:
    from core.plots import distribution_figures

    figs = distribution_figures(shown, ds.good_threshold) if picked else {}
    if not picked:
        st.info("No conversation matches these filters.")
    grid = st.columns(2)
    for n, fig in enumerate(figs.values()):
        grid[n % 2].plotly_chart(fig, width="stretch")
    st.download_button("Figures as HTML", lambda: export_html(figs, title=key), file_name="distributions.html")
    st.download_button("Figures as PNG", lambda: export_png(figs), file_name="distributions.png", mime="image/png")
with table:
    st.dataframe(shown, hide_index=True, width="stretch")
with rules:
    from core.dataset import get_customer

    st.markdown(f"```\n{get_customer(key.split('/')[0]).rules}\n```")
