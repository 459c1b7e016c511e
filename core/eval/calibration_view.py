"""Scorecard panel: which failure kinds this scorecard catches, measured on the customer's
labelled calibration set (held-out half), and which need a judge.

    from core.eval import calibration_view
    calibration_view.render(customer)       # inside any Streamlit page or tab
"""
from __future__ import annotations

import streamlit as st

from core.eval import calibrate as cal


def rows(report: dict) -> list[dict]:
    """One row per failure kind of a report, with its status for the operator."""
    out = []
    for k in report["kinds"]:
        rate = k["intended"]
        status = "-" if rate is None else ("caught" if rate >= cal.NEEDS_JUDGE_BELOW else "needs a judge")
        out.append({"failure kind": k["kind"], "labelled replies": k["n"],
                    "caught by its check %": None if rate is None else round(100 * rate),
                    "caught by any check %": None if k["any"] is None else round(100 * k["any"]), "status": status})
    return out


def _calibrate_now(customer: str) -> None:
    with st.spinner("Playing the labelled replies through the checks…"):
        cal.save(customer, [cal.evaluate(customer, split) for split in ("dev", "heldout")])


def render(customer: str) -> None:
    """The calibration panel for one customer (stored report; a button recomputes it in seconds)."""
    st.subheader("What this scorecard can catch")
    try:
        saved = cal.load_saved(customer)
        items = cal.load_items(customer)
    except cal.CalibrationError as exc:
        st.error(str(exc))
        return
    if not items:
        st.info(f"{customer} has no labelled calibration replies yet (customers/{customer}/calibration.yaml).")
        return
    if st.button("Recalibrate", key=f"calibrate_{customer}", help="python -m core.eval calibrate --customer NAME"):
        _calibrate_now(customer)
        saved = cal.load_saved(customer)
    if saved is None:
        st.info("Not calibrated yet: press Recalibrate (or run python -m core.eval calibrate).")
        return
    if saved.get("stale"):
        st.warning("The calibration set changed since this report: recalibrate.")
    held = next((r for r in saved["reports"] if r["split"] == "heldout"), saved["reports"][-1])
    st.dataframe(rows(held), hide_index=True, width="stretch")
    f = held["false_failures"]
    st.caption(f"Held-out half, {held['items']} labelled replies, no judge. Good replies failed: "
               f"{f['failed_replies']}/{f['replies']} replies, {f['failed_scenarios']}/{f['scenarios']} scenarios.")
    if held.get("needs_judge"):
        st.markdown("**Needs a judge** (below {:.0%} without one): {}".format(
            cal.NEEDS_JUDGE_BELOW, ", ".join(held["needs_judge"])))
