"""CSForge console home: customers, their datasets, models and the latest scores.

    streamlit run app.py
"""
import pandas as pd
import streamlit as st

from core.ui import PAGES, sidebar_nav


st.set_page_config(page_title="CSForge", page_icon="🛠️", layout="wide")
sidebar_nav()
st.title("CSForge")
st.caption("Data → model → evaluation for customer-service agents, one client at a time.")

with st.spinner("Loading customer datasets…"):
    from core.dataset import customer_errors, overview

rows = overview()
datasets = pd.DataFrame(rows)
cols = st.columns(3)
cols[0].metric("Customers", datasets["customer"].nunique() if len(datasets) else 0)
cols[1].metric("Datasets", len(datasets))
cols[2].metric("Conversations", int(datasets.get("conversations", pd.Series(dtype=int)).fillna(0).sum()))

st.subheader("Customers and datasets")
if datasets.empty:
    st.info("No customers yet: add customers/<name>/dataset.py and data files under data/<name>/.")
else:
    shown = datasets.rename(columns={"good_share": "good", "needs_human_share": "needs a human",
                                     "bad_records": "bad records"})
    columns = [c for c in ["customer", "dataset", "language", "conversations", "good", "needs a human",
                           "bad records", "error"] if c in shown]
    st.dataframe(shown[columns], hide_index=True, width="stretch",
                 column_config={"good": st.column_config.ProgressColumn("good", format="percent", min_value=0, max_value=1),
                                "needs a human": st.column_config.ProgressColumn("needs a human", format="percent",
                                                                                 min_value=0, max_value=1)})
for error in customer_errors():
    st.error(error)

st.subheader("Models")
try:
    from core.registry import eval_summaries, load as load_registry
    from core.retirement import show as show_retirement

    registry = load_registry()

    def last_scores(metrics: dict | None) -> str:
        return " · ".join(f"{customer}: pass {s.get('pass_rate', 0):.0%}, errors {s.get('error_rate', 0):.0%}"
                          for customer, s in eval_summaries(metrics).items()) or "not evaluated"

    from core.eval.gate import production_map

    serving: dict[str, list[str]] = {}
    for client, model in production_map().items():  # the one place production per client is decided
        serving.setdefault(model, []).append(client)
    models = pd.DataFrame([{"model": e.name, "type": e.type, "base": e.base_model, "customer": e.customer,
                            "status": e.status, "production for": ", ".join(sorted(serving.get(e.name, []))),
                            "last CS eval": last_scores(e.metrics)}
                           for e in registry.entries.values()])
    st.dataframe(models, hide_index=True, width="stretch")
    st.caption("Scores are the registry's copy of each model's latest CS-eval run (the Scorecard lists them too, "
               "marked as recorded in registry.yaml when their run is not stored in this console). "
               "\"production for\" lists the clients a model serves (set by the release gate); status production "
               "without a customer marks the generic baseline every comparison includes.")
    show_retirement(registry.entries.values())
    for error in registry.errors:
        st.warning(f"registry.yaml: {error}")
except Exception as exc:  # the home page must render even with a broken registry
    st.warning(f"Registry unavailable: {exc}")

st.subheader("Go to")
links = [p for p in PAGES if p[0] != "app.py"]
for column, (path, title, icon, _) in zip(st.columns(max(len(links), 1)), links):
    column.page_link(path, label=title, icon=icon)
