"""tau_retail's hooks for the reference agents: how to authenticate a user (the oracle adds it
when a task's gold omits it) and the planted failures @bad:wrong_variant and @bad:other_user."""
from __future__ import annotations


def auth_action(db, user_id: str) -> tuple[str, dict]:
    """The call that authenticates this user (the oracle adds it when a task's gold omits it)."""
    return "find_user_id_by_email", {"email": db["users"].view(user_id)["email"]}


def _wrong_variant(db, name: str, args: dict) -> dict | None:
    """Swap the first new item for another available option of the same product."""
    if "new_item_ids" not in args or not args["new_item_ids"]:
        return None
    order = db["orders"].view(args["order_id"])
    item = next((it for it in order["items"] if it["item_id"] == args["item_ids"][0]), None)
    if item is None:
        return None
    variants = db["products"].view(item["product_id"])["variants"]
    wrong = sorted(v for v, spec in variants.items()
                   if spec.get("available") and v not in (args["new_item_ids"][0], item["item_id"]))
    if not wrong:
        return None
    return {**args, "new_item_ids": [wrong[0], *args["new_item_ids"][1:]]}


def _other_user(db, name: str, args: dict) -> dict | None:
    """Point the write at another customer's order (same status) or profile."""
    if "order_id" in args:
        mine = db["orders"].view(args["order_id"])
        other = next((oid for oid, o in sorted(db["orders"].items())
                      if o["user_id"] != mine["user_id"] and o["status"] == mine["status"]), None)
        return {**args, "order_id": other} if other else None
    if "user_id" in args:
        other = next(uid for uid in sorted(db["users"]) if uid != args["user_id"])
        return {**args, "user_id": other}
    return None


PLANTS = {"wrong_variant": _wrong_variant, "other_user": _other_user}
