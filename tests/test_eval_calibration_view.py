"""The Scorecard's calibration panel, rendered with AppTest over a real stored calibration."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.eval import calibrate as cal


def _panel(customer: str):
    from core.eval import calibration_view

    calibration_view.render(customer)


def test_panel_shows_stored_held_out_rates_and_what_needs_a_judge():
    items = cal.load_items("twitter_care")
    picked = [it for it in items if it.label in ("wrong_language", "rude")] + [it for it in items if it.label == "good"][:10]
    reports = [cal.evaluate("twitter_care", split, items=picked) for split in ("dev", "heldout")]
    cal.save("twitter_care", reports)
    at = AppTest.from_function(_panel, args=("twitter_care",)).run(timeout=60)
    assert not at.exception
    table = at.dataframe[0].value
    shown = dict(zip(table["failure kind"], table["status"]))
    held = reports[1]
    lang = next(k for k in held["kinds"] if k["kind"] == "wrong_language")
    assert shown["wrong_language"] == ("caught" if lang["intended"] >= cal.NEEDS_JUDGE_BELOW else "needs a judge")
    assert shown["wrong_language"] == "caught"  # the run's own language check catches every labelled one
    assert shown["rude"] == "needs a judge"  # sarcasm is beyond the deterministic checks
    assert any("Needs a judge" in m.value and "rude" in m.value for m in at.markdown)


def test_panel_says_when_nothing_is_calibrated_yet():
    at = AppTest.from_function(_panel, args=("shop_zh",)).run(timeout=60)
    assert not at.exception and any("Not calibrated yet" in i.value for i in at.info)
