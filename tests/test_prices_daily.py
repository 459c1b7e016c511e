"""The daily price job against a cost map served from 127.0.0.1, retirement warnings, and the tables' retired rows."""
from __future__ import annotations

import json
import threading
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from core import pricing, registry, retirement
from core.dataset import ConversationDataset
from core.prices import costmap, costs, daily, readme, tokens

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 29)
README = "# CSForge\n\n## Costs\n<!-- pricing:start -->\nold\n<!-- pricing:end -->\n\n## After\nkept\n"
RECORDS = [{"id": "a", "messages": [
    {"role": "user", "content": "订单什么时候发货？ Where is my order?"},
    {"role": "assistant", "content": "您好，48小时内发货。 It ships in two days."}]}]


class CostMapServer:
    """Serves whatever map `self.body` holds, like raw.githubusercontent.com would."""

    def __init__(self):
        self.body = b"{}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model_prices_and_context_window.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, models: dict) -> None:
        self.body = json.dumps(models).encode()


@pytest.fixture
def served(monkeypatch):
    server = CostMapServer()
    monkeypatch.setenv("LITELLM_MODEL_COST_MAP_URL", server.url)
    yield server
    server.httpd.shutdown()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Both README datasets are one tiny Chinese/English file; profiles go to a temporary file."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    ds = ConversationDataset(path)
    monkeypatch.setattr(tokens, "open_dataset", lambda key: ds)
    monkeypatch.setattr(daily, "PROFILES_FILE", tmp_path / "profiles.json")
    return ds


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {"readme": tmp_path / "README.md", "changes": tmp_path / "CHANGES.md", "state": tmp_path / "state.json"}
    files["readme"].write_text(README, encoding="utf-8")
    return files


def _run(files, **kw) -> daily.DailyReport:
    return daily.run_daily(files["readme"], files["changes"], files["state"], files["readme"].parent / "p.json",
                           today=TODAY, **kw)


def _section(path: Path) -> str:
    return path.read_text(encoding="utf-8").split("<!-- pricing:start -->")[1].split("<!-- pricing:end -->")[0]


def _row(section: str, key: str) -> str:
    return next(line for line in section.splitlines() if line.startswith("|") and f"(`{key}`)" in line)


# ---------------------------------------------------------------- daily against a served map
def test_daily_logs_price_and_deprecation_changes_from_a_served_map_and_is_idempotent(served, tiny, tmp_path):
    files = _files(tmp_path)
    shipped = costmap.shipped_map().models
    served.serve(shipped)
    first = _run(files, require_fetch=True)
    assert first.fetched and not first.aborted and first.since is None
    assert f"LiteLLM cost map fetched {datetime.now(timezone.utc):%Y-%m-%d} from {served.url}" in first.refresh
    log = files["changes"].read_text(encoding="utf-8")
    assert log.startswith(daily.CHANGES_HEADER) and "first run: baseline" in log
    assert "retired already: GPT-4.1 nano (`gpt-4.1-nano`) on 2026-10-23" in log
    assert "retires within 30 days: Gemini 2.5 Flash (Gemini API) (`gemini/gemini-2.5-flash`) on 2026-12-01" in log
    assert "| 0.15 | 0.60 |" in _row(_section(files["readme"]), "gpt-4o-mini")

    changed = json.loads(json.dumps(shipped))
    changed["gpt-4o-mini"].update(input_cost_per_token=2e-7, output_cost_per_token=8e-7)
    changed["gpt-6-luna"]["deprecation_date"] = "2027-03-31"
    del changed["mistral/mistral-small-latest"]
    served.serve(changed)
    second = _run(files)
    assert second.since == "2026-11-29" and second.readme_changed
    assert "price: GPT-4o mini (`gpt-4o-mini`) 0.15 / 0.60 → 0.20 / 0.80 per 1M in/out" in second.changes
    assert "deprecation date appeared: GPT-6 Luna (`gpt-6-luna`) retires 2027-03-31" in second.changes
    assert "no longer in the cost map: Mistral Small (latest) (`mistral/mistral-small-latest`)" in second.changes
    assert len(second.changes) == 3, second.changes
    log = files["changes"].read_text(encoding="utf-8")
    assert log.index("price: GPT-4o mini") < log.index("first run: baseline"), "newest entry first"
    section = _section(files["readme"])
    assert "| 0.20 | 0.80 |" in _row(section, "gpt-4o-mini") and "retires 2027-03-31" in _row(section, "gpt-6-luna")

    before = {k: p.read_bytes() for k, p in files.items()}
    third = _run(files)
    assert third.changes == [] and not third.readme_changed
    assert {k: p.read_bytes() for k, p in files.items()} == before, "a second run with nothing new writes nothing"
    assert "no changes since the last logged run (2026-11-29)" in "\n".join(third.lines())


def test_daily_offline_falls_back_and_names_it_exit_0_and_require_fetch_writes_nothing(tiny, tmp_path, capsys,
                                                                                      monkeypatch):
    files = _files(tmp_path)
    monkeypatch.setattr(daily, "CHANGES_FILE", files["changes"])
    args = ["daily", "--readme", str(files["readme"]), "--changes", str(files["changes"]), "--state",
            str(files["state"]), "--url", "http://127.0.0.1:9/map.json"]  # port 9: nothing listens
    assert pricing.main(args + ["--require-fetch"]) == 3
    out = capsys.readouterr().out
    assert "could not fetch the newest LiteLLM cost map from http://127.0.0.1:9/map.json" in out
    assert "nothing written" in out and not files["changes"].exists() and "old" in _section(files["readme"])
    assert pricing.main(args) == 0
    out = capsys.readouterr().out
    assert "using the LiteLLM cost map shipped with litellm" in out and "README: price tables rewritten" in out
    assert "first run: baseline" in files["changes"].read_text(encoding="utf-8")
    assert pricing.main(args) == 0 and "no changes since the last logged run" in capsys.readouterr().out


def test_deprecation_passing_moves_the_row_out_once_and_stale_prices_are_logged_when_they_cross(tiny, tmp_path):
    files = _files(tmp_path)
    offline = "http://127.0.0.1:9/map.json"
    _run(files, url=offline)
    dec2 = date(2026, 12, 2)
    run = lambda: daily.run_daily(files["readme"], files["changes"], files["state"], tmp_path / "p.json",  # noqa: E731
                                  url=offline, today=dec2)
    report = run()
    assert report.since == "2026-11-29" and report.readme_changed
    assert report.changes == ["retired since the last run: Gemini 2.5 Flash (Gemini API) (`gemini/gemini-2.5-flash`) "
                              "on 2026-12-01"]
    section = _section(files["readme"])
    assert "(`gemini/gemini-2.5-flash`)" not in "\n".join(l for l in section.splitlines() if l.startswith("| "))
    assert "- Gemini 2.5 Flash (Gemini API) (`gemini/gemini-2.5-flash`): retired 2026-12-01; suggested: " \
           "`gemini/gemini-3.5-flash-lite`" in section
    assert run().changes == [], "logged once"

    old = json.loads(files["state"].read_text())
    key = next(k for k in old["finetune"] if k.startswith("fireworks any base up to 16B (e.g."))
    old["finetune"][key]["source_date"] = "2026-09-01"  # 90 days old on 2026-11-30, 91 on 2026-12-01
    new = {**old, "as_of": "2026-12-01"}
    crossing = daily.diff({**old, "as_of": "2026-11-30"}, new, date(2026, 12, 1))
    assert [line for line in crossing if line.startswith("stale:")] == [
        f"stale: {key} price source dated 2026-09-01 is 91 days old (limit 90)"]
    assert not any(line.startswith("stale:") for line in daily.diff(new, new, date(2026, 12, 5)))


# ---------------------------------------------------------------- tables and cheapest
def test_readme_moves_retired_rows_out_with_a_replacement_and_cheapest_says_what_it_left_out(tiny):
    prices = pricing.Prices.load()
    body = readme.readme_section(prices, today=TODAY)
    table_rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert not any("gpt-4.1-nano" in line or "retired" in line for line in table_rows)
    assert "- GPT-4.1 nano (`gpt-4.1-nano`): retired 2026-10-23; suggested: `gpt-6-luna` (0.10 / 0.50)" in body
    assert "- openai gpt-4.1-nano-2025-04-14 (supervised): retired 2026-10-23; suggested: openai" in body
    assert "retires 2026-12-01 (≤ 30 days: not a cheapest pick)" in _row(body, "gemini/gemini-2.5-flash")
    cheapest_block = body.split("### Cheapest live options")[1]
    assert "Gemini 2.5 Flash (Gemini API) (retires 2026-12-01)" in cheapest_block
    assert "GPT-4.1 nano (retired 2026-10-23)" in cheapest_block


def test_cheapest_skips_a_model_retiring_within_30_days_even_when_cheapest(tiny, tmp_path, monkeypatch):
    local = tmp_path / "mine.yaml"
    local.write_text(yaml.safe_dump({"rows": [
        {"provider": "acme", "model": "Acme Free", "litellm_model": "acme/free", "input_per_1m": 0.001,
         "output_per_1m": 0.001, "retires": "2026-12-20"},
        {"provider": "acme", "model": "Acme Later", "litellm_model": "acme/later", "input_per_1m": 0.001,
         "output_per_1m": 0.001, "retires": "2027-02-20"}]}))
    monkeypatch.setenv("CSFORGE_CANDIDATES", str(local))
    options = pricing.cheapest(pricing.Prices.load(), "shop_zh/demo", today=TODAY)
    assert options["prompt"][0].startswith("Acme Later (acme/later") and "[retires 2027-02-20]" in options["prompt"][0]
    assert not any("Acme Free" in line for line in options["prompt"])
    assert "Acme Free (retires 2026-12-20)" in options["ignored"]


# ---------------------------------------------------------------- retirement warnings
def test_warnings_give_date_and_a_same_provider_replacement_at_a_similar_price():
    life = retirement.Lifecycle.load()
    entries = [{"name": "old-gem", "access_point": "gemini/gemini-2.5-flash"},
               {"name": "nano", "access_point": "gpt-4.1-nano"},
               {"name": "tuned", "access_point": "ft:gpt-4o-mini-2024-07-18:acme::abc123"},
               {"name": "known", "access_point": "gpt-4.1-nano", "status": "retired"},
               {"name": "luna", "access_point": "gpt-6-luna"},
               {"name": "mine", "access_point": "local/smollm2-135m"}]
    found = {w.name: w for w in life.warnings(entries, TODAY)}
    assert set(found) == {"old-gem", "nano"}, "tuned retires in 46 days; status retired and live models are quiet"
    gem = found["old-gem"]
    assert (gem.retires, gem.days_left, gem.replacement.model) == (date(2026, 12, 1), 2, "gemini/gemini-3.5-flash-lite")
    assert "retires on 2026-12-01 (in 2 days)" in gem.message() and "$0.30/$2.50" in gem.message()
    assert found["nano"].retired and found["nano"].replacement.model == "gpt-6-luna"
    assert "retired on 2026-10-23 (37 days ago): calls to it fail" in found["nano"].message()
    later = {w.name for w in life.warnings(entries, date(2026, 12, 20))}
    assert later == {"old-gem", "nano", "tuned"}, "the fine-tune's base shuts down 2027-01-14"
    assert life.replacement("ft:gpt-4o-mini-2024-07-18:acme::abc123", TODAY).model == "gpt-6-luna"


def test_registry_validate_warns_but_does_not_fail(tmp_path, monkeypatch, capsys):
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"models": [
        {"name": "nano", "type": "base", "base_model": "gpt-4.1-nano", "access_point": "gpt-4.1-nano"},
        {"name": "luna", "type": "base", "base_model": "gpt-6-luna", "access_point": "gpt-6-luna"}]}))
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    assert registry.main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "warning: nano (gpt-4.1-nano) retired on 2026-10-23" in out and "gpt-6-luna" in out
    assert "luna (gpt-6-luna)" not in out and "2 entries, 0 problems" in out


def test_shipped_registry_default_api_model_is_live():
    entries = registry.load(ROOT / "registry.yaml").entries
    api = [e for e in entries.values() if e.access_point.startswith("gemini/")]
    assert api and retirement.Lifecycle.load().warnings(api, TODAY) == []


@pytest.mark.parametrize("page", ["app.py", "pages/2_Factory.py", "pages/3_Sandbox.py", "pages/4_Scorecard.py"])
def test_pages_that_pick_a_model_warn_about_a_retired_one(page, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"models": [
        {"name": "nano", "type": "base", "base_model": "gpt-4.1-nano", "access_point": "gpt-4.1-nano"}]}))
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    at = AppTest.from_file(str(ROOT / page), default_timeout=90).run()
    assert not at.exception
    texts = [w.value for w in at.warning]
    assert any("nano (gpt-4.1-nano) retired on 2026-10-23" in t and "gpt-6-luna" in t for t in texts), texts


# ---------------------------------------------------------------- Costs page refresh
def _costs_page(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    if not (ROOT / "data" / "shop_zh" / "demo.jsonl").exists():
        pytest.skip("data/shop_zh/demo.jsonl is not generated yet")
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"models": []}))
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    monkeypatch.setattr(pricing, "tokenizer_for", lambda model: "approx")  # keeps the page test fast
    monkeypatch.setattr(costs, "tokenizer_for", lambda model: "approx")
    return AppTest.from_file(str(ROOT / "pages" / "5_Costs.py"), default_timeout=90).run()


def _refresh(at):
    return next(b for b in at.button if b.label == "Refresh prices").click().run()


def test_costs_page_refresh_fetches_a_served_map_and_shows_the_time(served, monkeypatch, tmp_path):
    changed = json.loads(json.dumps(costmap.shipped_map().models))
    changed["gpt-6-luna"].update(input_cost_per_token=3e-7)
    served.serve(changed)
    at = _costs_page(monkeypatch, tmp_path)
    assert any("never refreshed here" in c.value for c in at.caption)
    at = _refresh(at)
    assert not at.exception
    assert any(f"from {served.url}" in s.value and "fetched" in s.value for s in at.success)
    assert any("last refreshed" in c.value for c in at.caption)
    table = at.dataframe[1].value
    assert table.loc[table["litellm_model"] == "gpt-6-luna", "$/1M in"].iloc[0] == pytest.approx(0.3)


def test_costs_page_refresh_offline_falls_back_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("LITELLM_MODEL_COST_MAP_URL", "http://127.0.0.1:9/map.json")
    at = _refresh(_costs_page(monkeypatch, tmp_path))
    assert not at.exception
    assert any("could not fetch" in w.value and "shipped with litellm" in w.value for w in at.warning)
    assert at.dataframe[1].value.shape[0] > 5, "the tables still render from the shipped map"


def test_without_the_data_files_the_tables_come_from_the_saved_profiles(monkeypatch):
    def missing(key):
        raise FileNotFoundError(f"dataset {key}: file not found")  # what CI sees: no client data

    monkeypatch.setattr(tokens, "open_dataset", missing)
    saved = costs.stored_profiles()[("twitter_care/dev", "approx")]
    body = readme.readme_section(pricing.Prices.load(), today=TODAY)
    assert "Not available when generated" not in body
    expected = pricing.session_cost(saved, 0.02, 0.06, fewshot=pricing.DEFAULT_FEWSHOT).usd
    assert pricing.fmt_usd(expected) in _row(body, "nebius/meta-llama/Meta-Llama-3.1-8B-Instruct").split("|")[6]
    assert not pricing.Prices.load().has_profile("nobody/none")


def test_fine_tunes_whose_new_jobs_stop_within_30_days_are_not_a_cheapest_pick(tiny, tmp_path):
    prices = pricing.Prices.load()
    now = pricing.cheapest(prices, "shop_zh/demo", today=TODAY)
    assert now["finetune"][0].startswith("openai gpt-4o-mini-2024-07-18 (supervised) "
                                         "[retires 2027-01-14, new jobs end 2027-01-06]")
    dec10 = date(2026, 12, 10)  # 27 days before OpenAI stops starting fine-tuning jobs
    later = pricing.cheapest(prices, "shop_zh/demo", today=dec10)
    assert not any(line.startswith("openai") for line in later["finetune"]) and later["finetune"]
    assert "openai gpt-4o-mini-2024-07-18 fine-tuning (retires 2027-01-14, new jobs end 2027-01-06)" in later["ignored"]
    files = _files(tmp_path)
    _run(files, url="http://127.0.0.1:9/x")
    report = daily.run_daily(files["readme"], files["changes"], files["state"], tmp_path / "p.json",
                             url="http://127.0.0.1:9/x", today=dec10)
    assert ("new fine-tuning jobs end within 30 days: openai gpt-4o-mini-2024-07-18 (supervised) on 2027-01-06"
            in report.changes)
    assert "retires 2027-01-14, new jobs end 2027-01-06 (≤ 30 days: not a cheapest pick)" in _section(files["readme"])


def test_price_modules_do_not_import_core_pricing_back():
    import subprocess
    import sys

    code = ("import sys, core.prices.daily, core.prices.readme, core.retirement; "
            "print(sorted(m for m in sys.modules if m in ('core.pricing', 'core.registry', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", "readme/daily/retirement must not pull in core.pricing, the registry or torch"
