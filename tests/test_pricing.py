"""core.pricing: per-session arithmetic, token profiles, price files, cost-map refresh, README section, Costs page."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from core import pricing
from core.dataset import ConversationDataset
from core.prices import costmap, costs, readme, tokens
from core.prices.tokens import conversation_tokens, counter, dataset_profile

ROOT = Path(__file__).resolve().parent.parent

ZH = [  # 您好，请问订单什么时候发货？ is 14 CJK characters (full-width punctuation counts as CJK)
    {"id": "zh1", "messages": [{"role": "user", "content": "您好，请问订单什么时候发货？"},
                               {"role": "assistant", "content": "您好，现货订单48小时内发货。"}]},
    {"id": "zh2", "messages": [{"role": "system", "content": "旧的系统提示不计入"},
                               {"role": "user", "content": "退款"},
                               {"role": "assistant", "content": "请提供订单号。"},
                               {"role": "user", "content": "123456789012"},
                               {"role": "assistant", "content": "已为您提交退款。"}]},
]
EN = [
    {"id": "en1", "messages": [{"role": "user", "content": "Where is my order?"},
                               {"role": "assistant", "content": "It ships tomorrow."}]},
]


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Two tiny datasets served under the README's dataset names, through pricing's one dataset seam."""
    sets = {"shop_zh/demo": ConversationDataset(_jsonl(tmp_path / "zh.jsonl", ZH)),
            "twitter_care/dev": ConversationDataset(_jsonl(tmp_path / "en.jsonl", EN))}

    def fake_open(key):
        if key not in sets:
            raise FileNotFoundError(key)
        return sets[key]

    monkeypatch.setattr(tokens, "open_dataset", fake_open)
    return sets


# ---------------------------------------------------------------- arithmetic
def test_session_cost_matches_a_hand_computed_case():
    approx = counter("approx")
    messages = [{"role": "user", "content": "hello there"},      # 11 chars -> 3 tokens
                {"role": "assistant", "content": "hi"},          # 1
                {"role": "user", "content": "12345678"},         # 2
                {"role": "assistant", "content": "abcdefghijkl"}]  # 3
    # turn 1 input: (3 + 3 overhead) + 3 priming = 9; turn 2: (3+3) + (1+3) + (2+3) + 3 = 18
    assert conversation_tokens(messages, approx) == (2, 9 + 18, 1 + 3, 3 + 1 + 2 + 3 + 4 * 3)
    profile = tokens.TokenProfile(dataset="x", tokenizer="approx", sessions=1, agent_turns=2, history_tokens=27,
                                  output_tokens=4, session_tokens=21, system_tokens=100)
    cost = pricing.session_cost(profile, in_per_1m=1.0, out_per_1m=2.0, fewshot=1, template_tokens=10)
    # prompt = 100 system + 10 template + 1 × 21 few-shot = 131 on each of 2 turns, plus 27 history
    assert cost.prompt_tokens == 131 and cost.input_tokens == 2 * 131 + 27
    assert cost.usd == pytest.approx((289 * 1.0 + 4 * 2.0) / 1e6)
    assert "= $0.000297" in cost.explain()
    # training: (21 + 100 system + 3 overhead) per example × 3 epochs × $2/1M
    assert pricing.training_cost(profile, 2.0, epochs=3) == pytest.approx(124 * 3 * 2.0 / 1e6)


def test_fmt_usd_never_uses_scientific_notation():
    assert [pricing.fmt_usd(x) for x in (0, 0.0000115, 0.000297, 0.931, 4.012)] == \
        ["$0", "$0.0000115", "$0.000297", "$0.931", "$4.01"]
    assert pricing.fmt_price(0.09999999999999999) == "0.10" and pricing.fmt_price(0.175) == "0.175"


# ---------------------------------------------------------------- token statistics
def test_token_profile_of_a_small_chinese_and_english_dataset(tiny):
    zh = dataset_profile("shop_zh/demo", "approx", ds=tiny["shop_zh/demo"])
    # zh1: user 14 tokens; agent 您好，现货订单48小时内发货。 = 12 CJK + "48。" (3 other chars: 1) = 13
    #   (approx_tokens counts the ideographic full stop 。 as an "other" character)
    #   history 14+3+3 = 20, output 13, session 14+3+13+3 = 33
    # zh2 (its system message is replaced by the agent's prompt): 退款 2, 请提供订单号。 7, 12 digits 3, 已为您提交退款。 8
    #   histories (2+3)+3 = 8 and (2+3)+(7+3)+(3+3)+3 = 24, outputs 7+8, session 5+10+6+11 = 32
    assert (zh.sessions, zh.agent_turns) == (2, 1.5)
    assert zh.history_tokens == (20 + 8 + 24) / 2 and zh.output_tokens == (13 + 15) / 2
    assert zh.session_tokens == (33 + 32) / 2
    assert zh.system_tokens == counter("approx")([tokens.system_prompt("shop_zh")])[0]  # its prompt.md
    en = dataset_profile("twitter_care/dev", "approx", ds=tiny["twitter_care/dev"])
    # "Where is my order?" 18 chars -> 5 tokens; "It ships tomorrow." 18 chars -> 5
    assert (en.sessions, en.agent_turns, en.history_tokens, en.output_tokens, en.session_tokens) == (1, 1, 11, 5, 16)
    assert en.input_per_turn == 11 and en.output_per_turn == 5


def test_model_tokenizer_used_where_available_and_profile_cached(tiny, csforge_home):
    if tokens.tokenizer_for("gpt-4o-mini") != "o200k":
        pytest.skip("LiteLLM's bundled o200k tokenizer file is not installed")
    ds = tiny["shop_zh/demo"]
    real = dataset_profile("shop_zh/demo", "o200k", ds=ds)
    approx = dataset_profile("shop_zh/demo", "approx", ds=ds)
    assert real.tokenizer == "o200k" and real.output_tokens != approx.output_tokens and real.output_tokens > 5
    assert len(list((csforge_home / "cache" / "pricing").glob("*.json"))) == 2
    tokens._PROFILES.clear()  # a new process: the profile comes from the disk cache, not a recount
    assert dataset_profile("shop_zh/demo", "o200k", ds=ds) == real
    assert tokens.tokenizer_for("gemini/gemini-2.5-flash") == "approx"


# ---------------------------------------------------------------- price files
def test_curated_price_files_validate_and_every_candidate_has_a_price():
    prices = pricing.Prices.load()
    assert prices.candidates[0].finetunable, "finetunable candidates come first"
    for row in prices.candidates:
        assert prices.candidate_prices(row)[0] is not None, row.litellm_model
    assert {r.provider for r in prices.finetune} >= {"openai", "google-vertex", "nebius", "together", "fireworks"}
    assert all(r.note for r in prices.finetune if r.train_per_1m is None), "a missing price says why"


def test_malformed_price_yaml_is_reported_with_file_row_and_field(csforge_home):
    local = csforge_home / "pricing" / "candidates.local.yaml"
    local.parent.mkdir(parents=True)
    local.write_text(yaml.safe_dump({"rows": [
        {"provider": "acme", "model": "Good", "litellm_model": "acme/good", "input_per_1m": 1, "output_per_1m": 2},
        {"provider": "acme", "model": "Bad", "litellm_model": "acme/bad", "input_per_1m": "cheap", "colour": "red"},
    ]}))
    with pytest.raises(pricing.PriceFileError) as err:
        pricing.load_candidates()
    message = str(err.value)
    assert str(local) in message and "rows[1] (acme Bad)" in message
    assert "field 'input_per_1m'" in message and "field 'colour'" in message and "rows[0]" not in message


def test_local_files_extend_and_override_the_curated_rows(csforge_home, tmp_path, monkeypatch):
    local = tmp_path / "mine.yaml"
    local.write_text(yaml.safe_dump({"rows": [
        {"provider": "openai", "model": "GPT-4o mini (our contract)", "litellm_model": "gpt-4o-mini",
         "finetunable": True, "input_per_1m": 0.1, "output_per_1m": 0.4, "source": "contract", "source_date": "2026-11-01"},
        {"provider": "acme", "model": "Acme Tiny", "litellm_model": "acme/tiny", "input_per_1m": 0.01, "output_per_1m": 0.02},
    ]}))
    monkeypatch.setenv("CSFORGE_CANDIDATES", str(local))
    _, rows = pricing.load_candidates()
    by_model = {r.litellm_model: r for r in rows}
    assert by_model["gpt-4o-mini"].model == "GPT-4o mini (our contract)" and "acme/tiny" in by_model
    assert len([r for r in rows if r.litellm_model == "gpt-4o-mini"]) == 1


# ---------------------------------------------------------------- cost map
def test_refresh_falls_back_to_the_shipped_map_offline_with_a_clear_message(monkeypatch, capsys, csforge_home):
    def offline(url, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(costmap, "_fetch", offline)
    assert pricing.main(["refresh"]) == 0
    out = capsys.readouterr().out
    assert "could not fetch the newest LiteLLM cost map" in out and "Network is unreachable" in out
    assert "shipped with litellm" in out
    assert not (csforge_home / "pricing" / "model_cost_map.json").exists()
    assert pricing.load_cost_map().prices("gpt-4o-mini") == (0.15, 0.6)


def test_refresh_stores_a_fetched_map_with_its_date_and_uses_it(csforge_home):
    fake = {f"m{i}": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6} for i in range(150)}
    fake["gpt-4o-mini"] = {"input_cost_per_token": 9e-7, "output_cost_per_token": 9e-7}
    cost_map, message, fetched = pricing.refresh_cost_map(fetch=lambda url, timeout: json.dumps(fake).encode())
    assert fetched
    assert "fetched 151 entries" in message and "fetched" in cost_map.source
    assert cost_map.fetched == datetime.now(timezone.utc).date()
    assert pricing.load_cost_map().prices("gpt-4o-mini") == (0.9, 0.9)
    _, bad, fetched = pricing.refresh_cost_map(fetch=lambda url, timeout: b"<html>rate limited</html>")
    assert "could not fetch" in bad and not fetched and pricing.load_cost_map().prices("gpt-4o-mini") == (0.9, 0.9)


# ---------------------------------------------------------------- README section and reports
README = "# CSForge\n\nIntro kept.\n\n## Costs\n<!-- pricing:start -->\nold tables\n<!-- pricing:end -->\n\n## After\nKept too.\n"


def test_readme_rewritten_only_between_markers_and_idempotently(tiny, tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text(README)
    assert pricing.main(["readme", "--readme", str(path)]) == 0
    first = path.read_text()
    assert first.startswith("# CSForge\n\nIntro kept.\n\n## Costs\n<!-- pricing:start -->\n")
    assert first.endswith("<!-- pricing:end -->\n\n## After\nKept too.\n") and "old tables" not in first
    section = first.split("<!-- pricing:start -->")[1]
    assert "$/session `shop_zh/demo`" in section and "$/session `twitter_care/dev`" in section
    assert "| GPT-4o mini (`gpt-4o-mini`)" in section and "| 0.15 | 0.60 |" in section
    assert "[together.ai](https://www.together.ai/pricing)" in section and "2026-05-08" in section
    assert "[^rank1]: Artificial Analysis" in section and "https://lmarena.ai/leaderboard" in section
    assert "_Tables updated " in section
    assert pricing.main(["readme", "--readme", str(path)]) == 0
    assert path.read_text() == first, "a second run with nothing changed changes nothing"
    assert "unchanged" in capsys.readouterr().out
    # a changed body gets a new stamp, still only between the markers
    readme.update_readme(path, "new body", now=datetime(2030, 1, 2, 3, 4, tzinfo=timezone.utc))
    assert path.read_text() == README.replace("old tables", "new body\n\n_Tables updated 2030-01-02 03:04 UTC._")


def test_readme_without_markers_fails_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text("# no markers\n")
    assert pricing.main(["readme", "--readme", str(path)]) == 2
    assert "<!-- pricing:start -->" in capsys.readouterr().err and path.read_text() == "# no markers\n"


def test_per_session_costs_in_the_readme_follow_the_data(tiny):
    prices = pricing.Prices.load()
    body = readme.readme_section(prices)
    row = next(line for line in body.splitlines() if "(`nebius/meta-llama/Meta-Llama-3.1-8B-Instruct`)" in line)
    expected = pricing.session_cost(dataset_profile("twitter_care/dev", "approx"), 0.02, 0.06,
                                    fewshot=pricing.DEFAULT_FEWSHOT).usd
    assert pricing.fmt_usd(expected) in row.split("|")[6]


def test_cheapest_lists_three_of_each_with_the_arithmetic(tiny):
    options = pricing.cheapest(pricing.Prices.load(), "shop_zh/demo")
    assert len(options["prompt"]) == 3 and len(options["finetune"]) == 3
    assert all("×" in line and "= $" in line for line in options["prompt"] + options["finetune"])
    assert not any("retired" in line or "gpt-4.1-nano" in line for line in options["prompt"] + options["finetune"])
    assert "Llama 3.1 8B Instruct" in options["prompt"][0]
    assert "gpt-4o-mini" in options["finetune"][0] and "once" in options["finetune"][0]


# ---------------------------------------------------------------- Costs page
def _page(monkeypatch, tmp_path, registry: list[dict] | None = None):
    from streamlit.testing.v1 import AppTest

    if not (ROOT / "data" / "shop_zh" / "demo.jsonl").exists():
        pytest.skip("data/shop_zh/demo.jsonl is not generated yet")
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"models": registry or []}))
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    monkeypatch.setattr(pricing, "tokenizer_for", lambda model: "approx")  # keeps the page test fast
    monkeypatch.setattr(costs, "tokenizer_for", lambda model: "approx")
    return AppTest.from_file(str(ROOT / "pages" / "5_Costs.py"), default_timeout=60).run()


def test_costs_page_shows_stats_costs_filters_and_stale_prices(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path)
    assert not at.exception
    assert at.metric[0].label == "Sessions" and int(at.metric[0].value.replace(",", "")) >= 100
    table = at.dataframe[1].value
    assert "GPT-6 Luna" in set(table["model"]) and list(table["$/session"]) == sorted(table["$/session"])
    assert not table["status"].str.startswith("retired").any(), "retired models are hidden by default"
    assert any("older than 90 days" in w.value and "gpt-4o-mini-2024-07-18" in w.value for w in at.warning)
    at.multiselect[0].set_value(["nebius"]).run()
    assert set(at.dataframe[1].value["provider"]) == {"nebius"}
    at.radio[0].set_value("no").run()
    assert list(at.dataframe[1].value["model"]) == ["DeepSeek V4 Flash (Nebius)"]
    finetune = at.dataframe[2].value
    assert finetune.loc[finetune["model"] == "gpt-4o-mini-2024-07-18", "training cost"].iloc[0] > 0
    assert any("No model has both a price and a CS-eval pass rate on shop_zh" in i.value for i in at.info)


def test_costs_page_charts_registry_models_with_metrics(monkeypatch, tmp_path):
    registry = [
        {"name": "zh-prompt", "type": "prompt", "base_model": "x", "access_point": "gpt-4o-mini",
         "customer": "shop_zh", "prompt_template": "Policy: {policy}\nQ: {question}",
         "metrics": {"cs_eval_shop_zh": {"pass_rate": 0.8, "error_rate": 0.1}}},
        {"name": "zh-tuned", "type": "finetune", "base_model": "x", "access_point": "local/zh-tuned",
         "customer": "shop_zh", "metrics": {"cs_eval_shop_zh": {"pass_rate": 0.6, "cost_per_session_usd": 0.0}}},
        {"name": "other-client", "type": "base", "base_model": "x", "access_point": "gpt-4o-mini",
         "customer": "twitter_care", "metrics": {"cs_eval_twitter_care": {"pass_rate": 0.9}}},
    ]
    at = _page(monkeypatch, tmp_path, registry)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    points = at.dataframe[3].value
    assert list(points["name"]) == ["zh-prompt"]  # a $0 local model cannot sit on the log cost axis
    assert points.loc[0, "cost_per_session"] > 0 and points.loc[0, "cost_source"] == "estimated on shop_zh/demo"
    assert any("zh-tuned (pass 60%)" in c.value for c in at.caption)
