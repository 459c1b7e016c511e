"""τ²-bench retail's 114 tasks as CSForge task scenarios (read from ../shared/data at run time)."""
from __future__ import annotations

import json

from core.eval.tasks import Action, Task
from customers.tau_retail.tools import _read

WRITE_CATEGORY = {"cancel_pending_order": "cancel", "modify_pending_order_address": "modify_order",
                  "modify_pending_order_payment": "modify_order", "modify_pending_order_items": "modify_order",
                  "modify_user_address": "modify_user", "return_delivered_order_items": "return",
                  "exchange_delivered_order_items": "exchange", "transfer_to_human_agents": "handoff"}


def _instructions(raw: dict) -> str:
    parts = [("Reason for contacting", raw.get("reason_for_call")), ("What you know", raw.get("known_info")),
             ("What you do not know", raw.get("unknown_info")), ("How you behave", raw.get("task_instructions"))]
    return "\n".join(f"{label}: {text}" for label, text in parts if text)


def _category(actions: list[Action]) -> str:
    kinds = list(dict.fromkeys(WRITE_CATEGORY[a.name] for a in actions if a.name in WRITE_CATEGORY))
    return "+".join(kinds) if kinds else "read_only"


def load_tasks(split: str | None = None) -> list[Task]:
    """The tasks, optionally only the train or test split (split_tasks.json)."""
    splits = json.loads(_read("split_tasks.json"))
    if split is not None and split not in splits:
        raise KeyError(f"tau_retail: no split '{split}'; splits: {', '.join(splits)}")
    where = {tid: name for name, ids in splits.items() if name in ("train", "test") for tid in ids}
    out = []
    for raw in json.loads(_read("tasks.json")):
        tid = str(raw["id"])
        if split is not None and where.get(tid) != split:
            continue
        crit = raw.get("evaluation_criteria") or {}
        gold = [Action(a["name"], dict(a.get("arguments") or {})) for a in crit.get("actions") or []]
        ins = (raw.get("user_scenario") or {}).get("instructions") or {}
        ins = ins if isinstance(ins, dict) else {"reason_for_call": str(ins)}
        out.append(Task(id=tid, instructions=_instructions(ins), gold=gold,
                        communicate=[str(x) for x in crit.get("communicate_info") or []],
                        assertions=list(crit.get("nl_assertions") or []),
                        initial_state=(raw.get("initial_state") or {}).get("initialization_data"),
                        split=where.get(tid), category=_category(gold),
                        opening=" ".join(x for x in (ins.get("reason_for_call"), ins.get("known_info")) if x),
                        known=ins.get("known_info"), language="en"))
    return out
