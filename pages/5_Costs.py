"""Costs: what one customer-service session costs on each candidate model, measured on the client's own data."""
import streamlit as st

from core import cost_quality, pricing
from core.ui import pick_dataset, sidebar_nav

st.set_page_config(page_title="Costs · CSForge", page_icon="💰", layout="wide")
sidebar_nav()
st.title("Costs")

with st.sidebar:
    key = pick_dataset("costs")
    fewshot = st.number_input("Few-shot example sessions in the prompt", 0, 10, pricing.DEFAULT_FEWSHOT,
                              help="A prompt-engineered agent carries these whole example sessions in every call.")
    epochs = st.number_input("Fine-tuning epochs", 1, 20, pricing.DEFAULT_EPOCHS)
    good_only = st.checkbox("Train only on good conversations (label above the threshold)")
    stale_days = st.number_input("A price is stale after (days)", 1, 3650, pricing.STALE_DAYS)
if key is None:
    st.stop()
try:
    prices = pricing.Prices.load()
except pricing.PriceFileError as exc:
    st.error(f"A price file is invalid; fix it and reload:\n\n```\n{exc}\n```")
    st.stop()
info, refresh = st.columns([5, 1])
if refresh.button("Refresh prices", help="Fetch LiteLLM's newest cost map; offline, keeps the one in use and says so"):
    result = pricing.refresh_cost_map()
    (st.success if result.fetched else st.warning)(result.message)
    prices = pricing.Prices.load()
info.caption(f"Inference prices: {prices.cost_map.source}; {pricing.last_refresh(prices.cost_map)}. "
             "Scheduled: `python -m core.pricing daily`.")

stale = pricing.stale_rows(prices, int(stale_days))
if stale:
    st.warning(f"{len(stale)} prices have a source older than {stale_days} days; re-check them:\n\n"
               + "\n".join(f"- {line}" for line in stale))

try:
    stats = pricing.token_stats_frame(prices, key, int(fewshot))
except (FileNotFoundError, OSError) as exc:
    st.error(str(exc))
    st.stop()
base = stats[stats["tokenizer"] == "approx"].iloc[0]
cols = st.columns(5)
cols[0].metric("Sessions", f"{base['sessions']:,}")
cols[1].metric("Agent turns / session", f"{base['agent turns/session']:.2f}")
cols[2].metric("History tokens in / turn", f"{base['history tokens/turn']:,.0f}")
cols[3].metric("Output tokens / turn", f"{base['output tokens/turn']:,.0f}")
cols[4].metric("System prompt tokens", f"{base['system prompt tokens']:,}")
with st.expander("Token statistics by tokenizer"):
    st.dataframe(stats, hide_index=True, width="stretch")
    st.caption(pricing.METHOD_NOTE)

st.subheader("Inference: cost per session of a prompt-engineered agent")
frame = pricing.inference_frame(prices, key, int(fewshot))
f1, f2, f3 = st.columns([3, 2, 2])
providers = f1.multiselect("Provider", sorted(frame["provider"].unique()))
tunable = f2.radio("Finetunable", ["all", "yes", "no"], horizontal=True)
hide_retired = f3.checkbox("Hide retired models", value=True)
shown = pricing.filter_frame(frame, providers, {"all": None, "yes": True, "no": False}[tunable], hide_retired)
first = ["model", "$/session", "$/1k sessions"]  # the answer first, so it is never scrolled out of view
st.dataframe(shown[first + [c for c in shown.columns if c not in first]], hide_index=True, width="stretch",
             column_config={"model": st.column_config.TextColumn(width="medium", pinned=True),
                            "$/session": st.column_config.NumberColumn(format="$%.6f", width="small"),
                            "$/1k sessions": st.column_config.NumberColumn(format="$%.3f")})

st.subheader(f"Fine-tuning: one-off training cost on {key} and tuned cost per session")
tuning = pricing.finetune_frame(prices, key, int(epochs), good_only)
first = ["provider", "model", "method", "training cost", "$/session"]  # the answers before the price inputs
st.dataframe(tuning[first + [c for c in tuning.columns if c not in first]], hide_index=True, width="stretch",
             column_config={"training cost": st.column_config.NumberColumn(format="$%.3f"),
                            "$/session": st.column_config.NumberColumn(format="$%.6f"),
                            "source": st.column_config.LinkColumn()})
st.caption("Empty prices are not public (the note says why). Fine-tunes served on a dedicated endpoint are "
           "billed per GPU-hour, not per token.")

st.subheader("Cost per session vs CS-eval pass rate")
customer = key.split("/")[0]
priced, free, todo = cost_quality.chart(prices, key, customer)
if priced:
    st.plotly_chart(cost_quality.figure(priced), width="stretch", key="cost_quality")
    st.dataframe(priced, hide_index=True, width="stretch",
                 column_config={"pass_rate": st.column_config.NumberColumn("pass rate", format="percent"),
                                "cost_per_session": st.column_config.NumberColumn("$/session", format="$%.6f")})
else:
    st.info(f"No model has both a price and a CS-eval pass rate on {customer} yet, so there is nothing to chart. "
            "Evaluate a priced model below (it needs its provider's key), or price a registry model by giving "
            "it a LiteLLM access point that is in the table above.")
if free:
    st.caption("Free per session (local, served by us; not on the log axis): "
               + ", ".join(f"{p['name']} (pass {p['pass_rate']:.0%})" for p in free))
if todo:
    c1, c2 = st.columns([3, 1])
    model = c1.selectbox(f"Evaluate a priced model on the {customer} suite", todo, key="costs_eval_model")
    if c2.button("Start CS-eval run", key="costs_eval_go"):
        from core import preflight
        from core.eval import jobs as eval_jobs

        try:
            job = eval_jobs.start(model, customer)
        except preflight.PreflightError as exc:
            for p in exc.problems:
                st.error(f"{p.what}\n\n**Fix:** {p.fix}")
        else:
            st.success(f"Started job {job}; follow it on the Scorecard's Run tab. The model appears here when it ends.")
