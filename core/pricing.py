"""Price tables and the cost of one customer-service session, measured on a client's own data.

    python -m core.pricing daily                          # refresh + README tables + change log (the scheduled job)
    python -m core.pricing refresh                        # fetch LiteLLM's newest cost map (offline: the shipped one)
    python -m core.pricing table --dataset shop_zh/demo   # per-session cost of every candidate and fine-tune
    python -m core.pricing cheapest                       # 3 cheapest live prompt-engineered and fine-tuned options
    python -m core.pricing readme [--readme README.md]    # rewrite the marked price section of README.md
    python -m core.pricing check                          # validate the price YAML files

Layout (each module imports only those below it; this one sits on top):
    core/prices/rows.py      the curated price rows (candidates.yaml, finetune.yaml) and local overrides
    core/prices/costmap.py   LiteLLM's cost map: fetched copy or the shipped one, refresh with fallback
    core/prices/tokens.py    a dataset's token profile under a model's tokenizer
    core/prices/costs.py     cost arithmetic, formatting, Prices (rows × map × profiles)
    core/prices/cheapest.py  the cheapest live options; core/retirement.py: dates and replacements
    core/prices/readme.py    the README section;  core/prices/daily.py: the daily job and change log
    core/pricing.py          the page's frames and the CLI (and the public names, re-exported)

Inference prices come from LiteLLM's cost map; fine-tuning prices are curated in core/prices/finetune.yaml
(they are not in LiteLLM's map); candidates in core/prices/candidates.yaml. Users extend both with
$CSFORGE_HOME/pricing/{candidates,finetune}.local.yaml or $CSFORGE_CANDIDATES / $CSFORGE_FINETUNE.
Cost per session: see core/prices/costs.py. Tokens are counted with the target model's tokenizer where
one is on disk (OpenAI's o200k and DeepSeek's ship inside LiteLLM), else with core.dataset.approx_tokens.
"""
from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import yaml

from core.paths import ROOT, registry_path
# re-exported: `from core.pricing import ...` is the public price API
from core.prices.cheapest import cheapest, ranked  # noqa: F401
from core.prices.costmap import (COST_MAP_URL, FETCH_TIMEOUT_S, CostMap, Refresh, last_refresh,  # noqa: F401
                                 load_cost_map, refresh_cost_map)
from core.prices.costs import (DEFAULT_EPOCHS, DEFAULT_FEWSHOT, STALE_DAYS, Prices, SessionCost,  # noqa: F401
                               fmt_price, fmt_usd, retiring_soon, session_cost, status, training_cost)
from core.prices.rows import (CANDIDATES_FILE, FINETUNE_FILE, PRICES_DIR, RESEARCH_FILE, CandidateRow,  # noqa: F401
                              FinetuneRow, PriceFileError, load_candidates, load_finetune)
from core.prices.tokens import (MESSAGE_OVERHEAD, REPLY_PRIMING, TokenProfile, conversation_tokens,  # noqa: F401
                                counter, dataset_profile, litellm_dir, open_dataset, system_prompt, tokenizer_for)

if TYPE_CHECKING:  # heavy imports stay out of `import core.pricing`
    import pandas as pd

# What the Costs page says under its token statistics.
METHOD_NOTE = ("Every agent message is one model call. Its input is the prompt (system prompt + template + few-shot "
               "example sessions) plus every earlier message of the session with a few tokens of chat formatting "
               "each; its output is the agent message. Cost per session = Σ over agent turns (input tokens × input "
               "price + output tokens × output price), averaged over the dataset's sessions. Tokens are counted "
               "with the model's own tokenizer where one is on disk (o200k for OpenAI, DeepSeek's), else as "
               "1 token per Chinese/Japanese/Korean character + 1 per 4 other characters (approx).")


def inference_frame(prices: Prices, key: str, fewshot: int = DEFAULT_FEWSHOT) -> "pd.DataFrame":
    """Per-session cost of every candidate on a dataset, cheapest first (the Costs page table)."""
    import pandas as pd

    rows = []
    for r in prices.inference_rows(key, fewshot):
        c = r.pop("cost")
        rows.append({**{k: r[k] for k in ("provider", "model", "litellm_model", "finetunable", "status")},
                     "$/1M in": r["in_per_1m"], "$/1M out": r["out_per_1m"],
                     "$/session": c.usd if c else None, "$/1k sessions": c.usd * 1000 if c else None,
                     "agent turns": c.agent_turns if c else None,
                     "in tokens/turn": c.input_tokens / c.agent_turns if c and c.agent_turns else None,
                     "out tokens/turn": c.output_tokens / c.agent_turns if c and c.agent_turns else None,
                     "tokenizer": r["tokenizer"], "source date": r["source_date"], "note": r["note"]})
    return pd.DataFrame(rows).sort_values("$/session", na_position="last", kind="stable").reset_index(drop=True)


def finetune_frame(prices: Prices, key: str, epochs: int = DEFAULT_EPOCHS, good_only: bool = False) -> "pd.DataFrame":
    """Fine-tuning rows with the one-off training cost and tuned per-session cost on a dataset."""
    import pandas as pd

    rows = []
    for r in prices.finetune_rows(key, epochs, good_only):
        c = r["cost"]
        rows.append({"provider": r["provider"], "model": r["model"], "method": r["method"], "status": r["status"],
                     "train $/1M": r["train_per_1m"], "tuned $/1M in": r["in_per_1m"], "tuned $/1M out": r["out_per_1m"],
                     "training tokens × epochs": (r["training_tokens"] or 0) * epochs,
                     "training cost": r["training_cost"], "$/session": c.usd if c else None,
                     "serving": r["serving"], "source": r["source"], "source date": r["source_date"], "note": r["note"]})
    return pd.DataFrame(rows)


def filter_frame(df: "pd.DataFrame", providers: Sequence[str] = (), finetunable: bool | None = None,
                 hide_retired: bool = False) -> "pd.DataFrame":
    """The Costs page filters: providers (empty = all), finetunable yes/no/None, retired rows hidden."""
    keep = df["provider"].isin(providers) if providers else df["provider"].notna()
    if finetunable is not None:
        keep &= df["finetunable"] == finetunable
    if hide_retired:
        keep &= ~df["status"].str.startswith("retired")
    return df[keep].reset_index(drop=True)


def token_stats_frame(prices: Prices, key: str, fewshot: int = DEFAULT_FEWSHOT) -> "pd.DataFrame":
    """Token statistics of a dataset under every tokenizer the candidates use (one row each)."""
    import pandas as pd

    names = sorted({tokenizer_for(r.litellm_model) for r in prices.candidates} | {"approx"})
    rows = []
    for name in names:
        p = prices.profile(key, name)
        rows.append({"tokenizer": name, "sessions": p.sessions, "agent turns/session": p.agent_turns,
                     "history tokens/turn": p.input_per_turn, "output tokens/turn": p.output_per_turn,
                     "system prompt tokens": p.system_tokens, "prompt tokens (with few-shot)": p.prompt_tokens(fewshot),
                     "tokens/session": p.session_tokens, "training tokens/epoch": p.training_tokens()})
    return pd.DataFrame(rows)


def pareto_figure(points: list[dict]):
    """Plotly scatter of cost per session vs pass rate; the cheapest-for-its-quality models are marked."""
    import plotly.graph_objects as go

    ordered = sorted(points, key=lambda p: (p["cost_per_session"], -p["pass_rate"]))
    frontier, best = [], -1.0
    for p in ordered:  # no other model is both cheaper and at least as good
        if p["pass_rate"] > best:
            frontier.append(p)
            best = p["pass_rate"]
    fig = go.Figure()
    fig.add_scatter(x=[p["cost_per_session"] for p in points], y=[p["pass_rate"] for p in points],
                    mode="markers+text", text=[p["name"] for p in points], textposition="top center",
                    name="registry models", customdata=[[p["type"], p["cost_source"]] for p in points],
                    hovertemplate="%{text}<br>$%{x:.6f}/session<br>pass rate %{y:.0%}<br>%{customdata[0]}, "
                                  "cost %{customdata[1]}<extra></extra>")
    fig.add_scatter(x=[p["cost_per_session"] for p in frontier], y=[p["pass_rate"] for p in frontier],
                    mode="lines", line={"dash": "dot"}, name="cheapest for its pass rate")
    fig.update_layout(xaxis_title="cost per session (USD)", yaxis_title="CS-eval pass rate",
                      yaxis_tickformat=".0%", height=420, margin={"t": 30})
    return fig


def stale_rows(prices: Prices, days: int = STALE_DAYS, today: date | None = None) -> list[str]:
    """One line per price whose source is older than `days` (or undated)."""
    today = today or datetime.now(timezone.utc).date()
    lines = []
    for r in prices.inference_rows(None, today=today):
        if r["in_per_1m"] is not None and (r["source_date"] is None or (today - r["source_date"]).days > days):
            lines.append(f"{r['model']} (inference, {r['source_date'] or 'undated'})")
    for r in prices.finetune:
        if (today - r.source_date).days > days:
            lines.append(f"{r.provider} {r.model} {r.method} (fine-tuning, {r.source_date}, "
                         f"{(today - r.source_date).days} days old)")
    return lines


def available_datasets() -> dict[str, list[str]]:
    """customer → keys of its datasets whose files exist."""
    from core.dataset import list_customers

    return {c.name: [s.key for s in c.datasets().values() if s.available] for c in list_customers()}


def registry_points(prices: Prices, key: str, customer: str | None = None) -> list[dict]:
    """Registry models with a CS-eval pass rate on the customer's suite: cost per session
    (measured by CS eval, else estimated on the dataset) vs pass rate."""
    from core.registry import eval_summaries

    points = []
    for entry in _registry_entries():
        suite = customer or entry.get("customer")
        summary = eval_summaries(entry.get("metrics")).get(suite or "")
        if not summary or summary.get("pass_rate") is None or entry.get("customer") not in (None, suite):
            continue
        cost, how = summary.get("cost_per_session_usd"), "measured by CS eval"
        if cost is None:
            found = prices.cost_map.lookup(str(entry.get("access_point", "")))
            if found is None:
                continue
            # the template's few-shot examples (if any) are in its text; {policy} is the system prompt
            prof = prices.profile(key, tokenizer_for(entry.get("access_point")))
            template = counter(prof.tokenizer)([entry.get("prompt_template") or ""])[0]
            cost, how = session_cost(prof, *found, template_tokens=template).usd, f"estimated on {key}"
        points.append({"name": entry["name"], "type": entry.get("type"), "pass_rate": float(summary["pass_rate"]),
                       "error_rate": summary.get("error_rate"), "cost_per_session": float(cost), "cost_source": how})
    return points


def _registry_entries() -> list[dict]:
    """Registry entries as plain dicts; an absent or broken registry is just empty here."""
    try:
        from core.registry import load

        return [e.model_dump() for e in load().entries.values()]
    except ImportError:
        pass
    path = registry_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return []
    items = data.get("models", []) if isinstance(data, dict) else data
    return [e for e in items or [] if isinstance(e, dict) and e.get("name")]




# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.pricing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("refresh", help="fetch LiteLLM's newest cost map; offline, keep the one we have")
    sub.add_parser("check", help="validate the price YAML files")
    table = sub.add_parser("table", help="per-session cost of every candidate and fine-tune on a dataset")
    table.add_argument("--dataset", default="twitter_care/dev")
    table.add_argument("--fewshot", type=int, default=DEFAULT_FEWSHOT)
    table.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    cheap = sub.add_parser("cheapest", help="3 cheapest live prompt-engineered and fine-tuned options per client")
    cheap.add_argument("--n", type=int, default=3)
    readme = sub.add_parser("readme", help="rewrite the price section of README.md between its markers")
    readme.add_argument("--readme", default=str(ROOT / "README.md"))
    daily = sub.add_parser("daily", help="refresh the cost map, regenerate the README tables, log what changed")
    daily.add_argument("--readme", default=str(ROOT / "README.md"))
    daily.add_argument("--changes", default=None, help="change log (default core/prices/CHANGES.md)")
    daily.add_argument("--state", default=None, help="snapshot of the last logged run (default core/prices/state.json)")
    daily.add_argument("--url", default=None, help="cost map URL (default $LITELLM_MODEL_COST_MAP_URL or LiteLLM's)")
    daily.add_argument("--require-fetch", action="store_true",
                       help="exit 3 and write nothing when the fetch fails (for CI; offline use falls back)")
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except (PriceFileError, ValueError, FileNotFoundError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_refresh(args) -> int:
    print(refresh_cost_map().message)
    return 0


def _cmd_check(args) -> int:
    _, cands = load_candidates()
    _, rows = load_finetune()
    cost_map = load_cost_map()
    missing = [r.litellm_model for r in cands if r.input_per_1m is None and cost_map.prices(r.litellm_model) is None]
    print(f"{len(cands)} candidates, {len(rows)} fine-tuning rows: valid. {cost_map.source}.")
    for m in missing:
        print(f"warning: {m} is not in the cost map and has no input_per_1m/output_per_1m")
    return 1 if missing else 0


def _cmd_table(args) -> int:
    import pandas as pd

    prices = Prices.load()
    prof = prices.profile(args.dataset, "approx")
    print(f"{args.dataset}: {prof.sessions} sessions, {prof.agent_turns:.2f} agent turns/session, "
          f"{prof.input_per_turn:,.0f} history + {prof.prompt_tokens(args.fewshot):,.0f} prompt tokens in, "
          f"{prof.output_per_turn:,.0f} out per turn (approx tokens). {prices.cost_map.source}.\n")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        inf = inference_frame(prices, args.dataset, args.fewshot)
        print(inf[["provider", "model", "status", "$/1M in", "$/1M out", "$/session", "$/1k sessions",
                   "tokenizer"]].to_string(index=False))
        print()
        ft = finetune_frame(prices, args.dataset, args.epochs)
        print(ft[["provider", "model", "method", "status", "train $/1M", "training cost", "$/session",
                  "serving"]].to_string(index=False))
    return 0


def _cmd_cheapest(args) -> int:
    prices = Prices.load()
    print(prices.cost_map.source)
    ignored: list[str] = []
    for customer, keys in available_datasets().items():
        if not keys:
            print(f"\n{customer}: no dataset file available")
            continue
        options = cheapest(prices, keys[0], args.n)
        ignored = options["ignored"]
        print(f"\n{customer} (dataset {keys[0]})\n  prompt-engineered agent:")
        for i, line in enumerate(options["prompt"], 1):
            print(f"    {i}. {line}")
        print("  fine-tuned agent:")
        for i, line in enumerate(options["finetune"], 1):
            print(f"    {i}. {line}")
    if ignored:
        print(f"\nLeft out (retired or retiring within 30 days): {', '.join(ignored)}")
    return 0


def _cmd_readme(args) -> int:
    from core.prices.readme import find_markers, readme_section, update_readme

    path = Path(args.readme)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    find_markers(path)  # fail fast, before measuring the datasets
    changed = update_readme(path, readme_section(Prices.load()))
    print(f"{path}: price tables {'rewritten' if changed else 'unchanged (already current)'}")
    return 0


def _cmd_daily(args) -> int:
    from core.prices import daily

    path = Path(args.readme)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    report = daily.run_daily(path, Path(args.changes) if args.changes else daily.CHANGES_FILE,
                             Path(args.state) if args.state else daily.STATE_FILE, daily.PROFILES_FILE,
                             url=args.url, require_fetch=args.require_fetch)
    print("\n".join(report.lines()))
    return 3 if report.aborted else 0


_COMMANDS = {"refresh": _cmd_refresh, "check": _cmd_check, "table": _cmd_table, "cheapest": _cmd_cheapest,
             "readme": _cmd_readme, "daily": _cmd_daily}

if __name__ == "__main__":
    sys.exit(main())
