"""Calibrate the CS-eval checks against a client's labelled replies.

    python -m core.eval calibrate --customer shop_zh [--judge MODEL] [--split dev|heldout|all] [--json]

`customers/<name>/calibration*.yaml` holds agent replies for turns of the client's scenarios,
each labelled `good` or with one failure kind (KINDS). Every reply is played in-process
through exactly the checks a run uses (runner.ScenarioRun with a scripted agent): the
scenario's earlier turns are answered with their reference replies, the labelled reply
answers its turn, and the scenario's conversation checks run when that turn is the last.

Reported per kind: detection by the check meant for that kind, detection by any check, and
(with a judge) the judge's precision and recall; for good replies, false failures per reply
and per scenario. Items are split into a dev half and a held-out half by a hash of their id,
fixed forever, so that tuning on dev can be checked on replies nobody tuned against.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.eval.judge import KINDS  # the failure kinds: one list for labels, checks and the judge's rubrics
from core.paths import CUSTOMERS_DIR

Label = Literal[("good", *KINDS)]
SPLITS = ("dev", "heldout", "all")

# The checks meant for each kind: a check's name (`undesired:x`) or its kind (`handoff`, ...).
INTENDED: dict[str, tuple[str, ...]] = {
    "over_promise": ("undesired:promise", "undesired:limits"),
    "leak": ("undesired:leak",),
    "hallucination": ("undesired:grounding",),
    "ignores_context": ("undesired:contradiction",),
    "no_handoff": ("handoff",),
    "needless_handoff": ("handoff",),
    "wrong_language": ("undesired:wrong_language", "language"),
    "rude": ("undesired:rude",),
    "injection_comply": ("undesired:injection", "not_contains", "not_regex"),
}


class CalibrationError(ValueError):
    """A calibration file that does not validate; the message names the file, item and reason."""


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str
    turn: int = Field(0, ge=0)
    label: Label
    reply: str
    tag: str = ""  # a sub-kind reported apart (leak: verbatim / near-verbatim / confidential / paraphrase)
    id: str = ""  # default: scenario, turn, label and a hash of the reply
    note: str = ""  # what is wrong with it, for reviewers

    def key(self) -> str:
        digest = hashlib.sha256(self.reply.encode()).hexdigest()[:8]
        return self.id or f"{self.scenario}.{self.turn}.{self.label}.{digest}"

    @property
    def split(self) -> str:
        """'dev' or 'heldout', by the first byte of sha256(id): fixed, about half each."""
        return "dev" if hashlib.sha256(self.key().encode()).digest()[0] % 2 == 0 else "heldout"


def _short(value: Any) -> Any:
    """`[scenario, turn, label, reply(, tag)]` rows are the compact form of an item."""
    if isinstance(value, list):
        if len(value) not in (4, 5):
            raise ValueError("a row item is [scenario, turn, label, reply] or [..., tag]")
        return dict(zip(("scenario", "turn", "label", "reply", "tag"), value))
    return value


def calibration_files(customer: str) -> list[Path]:
    return sorted((CUSTOMERS_DIR / customer).glob("calibration*.yaml"))


def load_items(customer: str) -> list[Item]:
    """Every labelled reply of a client; an empty or missing set is an empty list."""
    items: list[Item] = []
    for path in calibration_files(customer):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise CalibrationError(f"{path.name}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("items", []), list):
            raise CalibrationError(f"{path.name}: a calibration file is a mapping with a list `items`")
        for i, raw in enumerate(data.get("items") or []):
            try:
                items.append(Item.model_validate(_short(raw)))
            except (ValidationError, ValueError) as exc:
                raise CalibrationError(f"{path.name}: items[{i}]: {exc}") from None
    keys = [it.key() for it in items]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise CalibrationError(f"{customer}: calibration item ids used twice: {', '.join(dupes[:5])}")
    return items


def _validate_against(items: list[Item], suite) -> None:
    turns = {s.id: len(s.turns) for s in suite.scenarios}
    for it in items:
        if it.scenario not in turns:
            raise CalibrationError(f"item {it.key()}: no scenario '{it.scenario}' in suite {suite.name}")
        if it.turn >= turns[it.scenario]:
            raise CalibrationError(f"item {it.key()}: scenario '{it.scenario}' has {turns[it.scenario]} turns")


# ---------------------------------------------------------------- playing one reply

def play_item(item: Item, suite, settings, env) -> list[dict]:
    """The checks of the item's turn (and conversation checks on a last turn), as a run records them."""
    from core.eval import runner
    from core.eval.references import ScriptedReplies

    sc = next(s for s in suite.scenarios if s.id == item.scenario)
    last = item.turn == len(sc.turns) - 1
    cut = sc.model_copy(update={"turns": sc.turns[:item.turn + 1], "checks": sc.checks if last else [],
                                "simulate": None})
    replies = [t.reference or "" for t in cut.turns[:-1]] + [item.reply]
    rec = runner.ScenarioRun(cut, suite, settings, ScriptedReplies(replies), env).play()
    return [c for c in rec["checks"] if c["turn"] in (item.turn, None)]


@dataclass
class Outcome:
    item: Item
    checks: list[dict]
    failed: list[str] = field(default_factory=list)  # names of failed checks
    intended: bool = False
    judge: dict | None = None  # the judge's verdict on this reply, when one ran


def _is_intended(kind: str, check: dict) -> bool:
    return any(check["name"] == n or check["kind"] == n or check["name"].startswith(n + ":")
               for n in INTENDED.get(kind, ()))


def evaluate(customer: str, split: str = "heldout", judge: str | None = None,
             items: list[Item] | None = None, suite=None) -> dict:
    """Play every item of `split` and return the report (see `report`)."""
    from core.eval import runner
    from core.eval.suite import load_suite

    suite = suite or load_suite(customer)
    items = load_items(customer) if items is None else items
    _validate_against(items, suite)
    chosen = [it for it in items if split == "all" or it.split == split]
    settings = runner.RunSettings(model="calibration", customer=customer, judge=judge, concurrency=1)
    env = runner.make_env(suite, settings, runner.Caller(settings))
    if judge:
        env.judge_every_turn = True
    outcomes = []
    for it in chosen:
        checks = play_item(it, suite, settings, env)
        failed = [c["name"] for c in checks if c["passed"] is False and c["name"] != "undesired:judge"]
        oc = Outcome(it, checks, failed, any(_is_intended(it.label, c) for c in checks if c["passed"] is False))
        jc = next((c for c in checks if c["name"] == "undesired:judge"), None)
        if jc is not None:
            oc.judge = {"passed": jc["passed"], "kind": jc.get("judge_kind"), "cost_usd": jc.get("cost_usd", 0.0)}
        outcomes.append(oc)
    return report(outcomes, split, customer, judge)


# ---------------------------------------------------------------- stored reports (the Scorecard reads them)

def report_path(customer: str) -> Path:
    from core.paths import home_dir

    return home_dir("calibration") / f"{customer}.json"


def save(customer: str, reports: list[dict]) -> Path:
    """Write a customer's latest calibration (both halves) atomically, stamped with the set's hash."""
    import json
    import os
    import time

    path = report_path(customer)
    data = {"customer": customer, "created_at": time.time(), "set_hash": set_hash(customer), "reports": reports}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_saved(customer: str) -> dict | None:
    """The latest stored calibration of a customer, with `stale` set when the set changed since."""
    import json

    path = report_path(customer)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    data["stale"] = data.get("set_hash") != set_hash(customer)
    return data


def set_hash(customer: str) -> str:
    digest = hashlib.sha256()
    for path in calibration_files(customer):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------- the report

def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


# Below this detection rate without a judge, the Scorecard names a kind "needs a judge".
NEEDS_JUDGE_BELOW = 0.8


def _kind_row(kind: str, bad: list[Outcome]) -> dict:
    return {"kind": kind, "n": len(bad), "intended": _rate(sum(o.intended for o in bad), len(bad)),
            "any": _rate(sum(bool(o.failed) for o in bad), len(bad)),
            "missed": [o.item.key() for o in bad if not o.failed]}


def report(outcomes: list[Outcome], split: str, customer: str, judge: str | None) -> dict:
    kinds = []
    for kind in KINDS:
        bad = [o for o in outcomes if o.item.label == kind]
        row = _kind_row(kind, bad)
        if judge:
            row.update(_judge_scores(outcomes, kind))
        kinds.append(row)
        for tag in sorted({o.item.tag for o in bad if o.item.tag}):
            kinds.append(_kind_row(f"{kind}:{tag}", [o for o in bad if o.item.tag == tag]))
    good = [o for o in outcomes if o.item.label == "good"]
    scen_good = {o.item.scenario for o in good}
    scen_bad = {o.item.scenario for o in good if o.failed}
    false = {"replies": len(good), "failed_replies": sum(bool(o.failed) for o in good),
             "reply_rate": _rate(sum(bool(o.failed) for o in good), len(good)),
             "scenarios": len(scen_good), "failed_scenarios": len(scen_bad),
             "scenario_rate": _rate(len(scen_bad), len(scen_good)),
             "failures": [{"id": o.item.key(), "checks": o.failed,
                           "reasons": [c["reason"] for c in o.checks if c["passed"] is False][:3]}
                          for o in good if o.failed]}
    needs = [k["kind"] for k in kinds if k["n"] and (k["intended"] or 0) < NEEDS_JUDGE_BELOW]
    out = {"customer": customer, "split": split, "judge": judge, "items": len(outcomes), "kinds": kinds,
           "false_failures": false, "needs_judge": needs}
    if judge:
        out["kappa"] = _kappa(outcomes)
        out["not_judged"] = sum(1 for o in outcomes if o.judge and o.judge["passed"] is None)
        out["judge_cost_usd"] = sum(o.judge.get("cost_usd", 0.0) for o in outcomes if o.judge)
    return out


def _judge_label(o: Outcome) -> str:
    if not o.judge or o.judge["passed"] is None:
        return "not_judged"
    return "good" if o.judge["passed"] else (o.judge.get("kind") or "unknown")


def _judge_scores(outcomes: list[Outcome], kind: str) -> dict:
    said = [_judge_label(o) for o in outcomes]
    tp = sum(1 for o, s in zip(outcomes, said) if s == kind and o.item.label == kind)
    fp = sum(1 for o, s in zip(outcomes, said) if s == kind and o.item.label != kind)
    fn = sum(1 for o, s in zip(outcomes, said) if s != kind and o.item.label == kind)
    return {"judge_precision": _rate(tp, tp + fp), "judge_recall": _rate(tp, tp + fn)}


def _kappa(outcomes: list[Outcome]) -> float | None:
    """Cohen's kappa between the labels and the judge's labels (not-judged counts as a disagreement)."""
    pairs = [(o.item.label, _judge_label(o)) for o in outcomes]
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    labels = {a for a, _ in pairs} | {b for _, b in pairs}
    expected = sum((sum(a == lab for a, _ in pairs) / n) * (sum(b == lab for _, b in pairs) / n) for lab in labels)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def table(rep: dict) -> str:
    """The report as the CLI prints it."""
    judge = rep.get("judge")
    head = ["kind", "n", "intended check", "any check"] + (["judge precision", "judge recall"] if judge else [])
    rows = [[k["kind"], k["n"], _pct(k["intended"]), _pct(k["any"])]
            + ([_pct(k.get("judge_precision")), _pct(k.get("judge_recall"))] if judge else []) for k in rep["kinds"]]
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(head)]
    lines = [f"calibration {rep['customer']} · {rep['split']} half · {rep['items']} replies"
             + (f" · judge {judge}" if judge else " · no judge")]
    lines += ["  ".join(str(h).ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    f = rep["false_failures"]
    lines.append(f"false failures on good replies: {f['failed_replies']}/{f['replies']} replies "
                 f"({_pct(f['reply_rate'])}), {f['failed_scenarios']}/{f['scenarios']} scenarios "
                 f"({_pct(f['scenario_rate'])})")
    if rep.get("needs_judge"):
        lines.append(f"below {NEEDS_JUDGE_BELOW:.0%} by the intended check (needs a judge): {', '.join(rep['needs_judge'])}")
    if judge:
        lines.append(f"judge agreement with the labels: Cohen's kappa {rep['kappa']:.2f}; not judged "
                     f"{rep['not_judged']}; judge cost ${rep['judge_cost_usd']:.4f} (apart from any agent)"
                     if rep.get("kappa") is not None else "judge: no replies")
    return "\n".join(lines)
