"""Cost vs quality for one customer: every model with both a price and a CS-eval pass rate.

    from core import cost_quality, pricing
    priced, free, todo = cost_quality.chart(pricing.Prices.load(), "shop_zh/demo", "shop_zh")
    cost_quality.figure(priced)          # plotly, log-scale cost axis

Pass rates come from the registry's metrics and from the runs stored in this console (so a
LiteLLM model string evaluated from the Costs page counts too). Cost per session is the one CS
eval measured when it is above zero, else the price table's estimate on the customer's dataset.
A model that costs nothing per session (local, served by us) cannot sit on a log axis: it is
returned apart, in `free`.
"""
from __future__ import annotations

from typing import Any


def routable(model: str) -> str:
    """The price table says `gpt-4.1-mini`; core.llm routes provider-prefixed strings only."""
    return model if "/" in model else f"openai/{model}"


def _prices_by_model(prices: Any, key: str) -> dict[str, float]:
    """Routable LiteLLM string -> estimated $/session on the dataset."""
    from core import pricing

    frame = pricing.inference_frame(prices, key)
    return {routable(str(r["litellm_model"])): float(r["$/session"]) for _, r in frame.iterrows()
            if r["$/session"] is not None and r["$/session"] == r["$/session"]}


def chart(prices: Any, key: str, customer: str) -> tuple[list[dict], list[dict], list[str]]:
    """(priced points, free points, unevaluated models) from one pass over prices, registry and runs."""
    from core import pricing, registry
    from core.eval import report

    by_model = _prices_by_model(prices, key)
    found = {p["name"]: dict(p) for p in pricing.registry_points(prices, key, customer)}
    for model, run in report.latest_runs(customer).items():
        s = run.get("summary") or {}
        if model in found or s.get("pass_rate") is None:
            continue
        found[model] = {"name": model, "type": "model string", "pass_rate": float(s["pass_rate"]),
                        "error_rate": s.get("error_rate"), "cost_per_session": float(s.get("cost_per_session_usd") or 0),
                        "cost_source": "measured by CS eval"}
    entries = registry.load().entries
    for p in found.values():
        if p["cost_per_session"] > 0:
            continue
        target = routable(entries[p["name"]].access_point if p["name"] in entries else p["name"])
        if target in by_model:
            p["cost_per_session"], p["cost_source"] = by_model[target], f"price table on {key}"
    priced = sorted((p for p in found.values() if p["cost_per_session"] > 0), key=lambda p: p["cost_per_session"])
    free = [p for p in found.values() if p["cost_per_session"] <= 0]
    done = {routable(p["name"]) for p in priced + free}
    return priced, free, [m for m in by_model if m not in done]


def points(prices: Any, key: str, customer: str) -> tuple[list[dict], list[dict]]:
    """(priced points, free points): name, type, pass_rate, error_rate, cost_per_session, cost_source."""
    priced, free, _ = chart(prices, key, customer)
    return priced, free


def unevaluated(prices: Any, key: str, customer: str) -> list[str]:
    """Priced LiteLLM models with no pass rate on this customer yet (candidates to evaluate)."""
    return chart(prices, key, customer)[2]


def figure(priced: list[dict]):
    """The pricing module's cost-vs-pass-rate scatter with a log cost axis (prices span 100x)."""
    from core import pricing

    fig = pricing.pareto_figure(priced)
    fig.update_xaxes(type="log", title="cost per session (USD, log scale)")
    fig.update_yaxes(range=[-0.05, 1.05])
    return fig
