"""τ²-bench retail as a CSForge client: the shop's 15 tools over its database.

The data (policy, db.json, tasks, split) is τ²-bench's retail domain (MIT), read at run time
from ../shared/data/tau2_retail beside the repository ($CSFORGE_SHARED_DATA overrides the
folder); nothing of it is copied here. The tools are CSForge's own code written from the
documented effects: a write on a wrong status, an unknown id or an invalid argument raises
and changes nothing; the agent sees the error as the tool result.
"""
from __future__ import annotations

import ast
import json
import operator
import os
from functools import lru_cache
from pathlib import Path

from core.eval.tools import EnvironmentMissing, ToolError, tool
from core.paths import ROOT

AUTH_TOOLS = ("find_user_id_by_email", "find_user_id_by_name_zip")  # the result is the user id
HANDOFF_TOOLS = ("transfer_to_human_agents",)
HANDOFF_MESSAGE = "YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."
CONFIRM_WRITES = True  # policy: list the details and get an explicit yes before any write
CANCEL_REASONS = ("no longer needed", "ordered by mistake")
# Per-turn behaviours left out here: agents legitimately compute totals and price differences
# (τ²-bench's required facts are such sums), which the grounding check would call invented;
# made-up ids or amounts are caught by the database comparison instead.
SKIP_BEHAVIOURS = ("grounding",)


def data_dir() -> Path:
    return Path(os.environ.get("CSFORGE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "tau2_retail"


def _read(name: str) -> str:
    path = data_dir() / name
    if not path.exists():
        raise EnvironmentMissing(f"tau_retail: {path} not found (τ²-bench retail data lives in "
                                 "../shared/data/tau2_retail beside the repository)")
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_state() -> dict:
    return json.loads(_read("db.json"))


def policy() -> str:
    """The agent's system prompt: τ²-bench's retail policy."""
    return _read("policy.md").strip()


def owner(db, name: str, args: dict) -> str | None:
    """Whose data a call touches (None: shop data such as products)."""
    if "user_id" in args:
        return args["user_id"]
    order = db["orders"].view(args["order_id"]) if "order_id" in args else None
    return order.get("user_id") if isinstance(order, dict) else None


# ---------------------------------------------------------------- helpers

def _order(db, order_id: str) -> dict:
    if order_id not in db["orders"]:
        raise ToolError("Order not found")
    return db["orders"][order_id]


def _user(db, user_id: str) -> dict:
    if user_id not in db["users"]:
        raise ToolError("User not found")
    return db["users"][user_id]


def _payment(db, user_id: str, payment_method_id: str) -> dict:
    methods = _user(db, user_id)["payment_methods"]
    if payment_method_id not in methods:
        raise ToolError("Payment method not found")
    return methods[payment_method_id]


def _is_gift_card(method: dict) -> bool:
    return method.get("source") == "gift_card"


def _variant(db, product_id: str, item_id: str) -> dict:
    if product_id not in db["products"]:
        raise ToolError("Product not found")
    variants = db["products"].view(product_id)["variants"]
    if item_id not in variants:
        raise ToolError(f"New item {item_id} not found or available")
    return variants[item_id]


def _check_items(order: dict, item_ids: list[str]) -> None:
    have = [it["item_id"] for it in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > have.count(item_id):
            raise ToolError(f"Item {item_id} not found in the order (or not that many)")


def _price_difference(db, order: dict, item_ids: list[str], new_item_ids: list[str],
                      allow_same: bool) -> tuple[float, list[dict]]:
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match")
    diff, variants = 0.0, []
    for item_id, new_id in zip(item_ids, new_item_ids):
        if item_id == new_id and not allow_same:
            raise ToolError("The new item id should be different from the old item id")
        item = next(it for it in order["items"] if it["item_id"] == item_id)
        variant = _variant(db, item["product_id"], new_id)
        if not variant.get("available"):
            raise ToolError(f"New item {new_id} not found or available")
        diff += variant["price"] - item["price"]
        variants.append(variant)
    return round(diff, 2), variants


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict:
    return {"address1": address1, "address2": address2, "city": city, "state": state,
            "country": country, "zip": zip}


# ---------------------------------------------------------------- read

@tool("read")
def find_user_id_by_email(db, email: str) -> str:
    """Find user id by email. If the user is not found, the function returns an error message.

    Args:
        email: The email of the user, such as 'something@example.com'.
    """
    wanted = email.strip().lower()
    for user_id, user in db["users"].items():
        if user["email"].lower() == wanted:
            return user_id
    raise ToolError("User not found")


@tool("read")
def find_user_id_by_name_zip(db, first_name: str, last_name: str, zip: str) -> str:
    """Find user id by first name, last name, and zip code. Use it only when the user cannot give
    their email or is not found by email. If the user is not found, returns an error message.

    Args:
        first_name: The first name of the customer, such as 'John'.
        last_name: The last name of the customer, such as 'Doe'.
        zip: The zip code of the customer, such as '12345'.
    """
    first, last = first_name.strip().lower(), last_name.strip().lower()
    for user_id, user in db["users"].items():
        name = user["name"]
        if name["first_name"].lower() == first and name["last_name"].lower() == last \
                and user["address"]["zip"] == zip.strip():
            return user_id
    raise ToolError("User not found")


@tool("read")
def get_user_details(db, user_id: str) -> dict:
    """Get the details of a user, including their orders and payment methods.

    Args:
        user_id: The user id, such as 'sara_doe_496'.
    """
    return _user(db, user_id)


@tool("read")
def get_order_details(db, order_id: str) -> dict:
    """Get the status and details of an order.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning of the order id.
    """
    return _order(db, order_id)


@tool("read")
def get_product_details(db, product_id: str) -> dict:
    """Get the inventory details of a product: its variants with options, availability and price.

    Args:
        product_id: The product id, such as '6086499569'. A product id is not an item id.
    """
    if product_id not in db["products"]:
        raise ToolError("Product not found")
    return db["products"].view(product_id)


@tool("read")
def get_item_details(db, item_id: str) -> dict:
    """Get the inventory details of an item (one variant of a product).

    Args:
        item_id: The item id, such as '6086499569'. An item id is not a product id.
    """
    for product in db["products"].values():
        if item_id in product["variants"]:
            return product["variants"][item_id]
    raise ToolError("Item not found")


@tool("read")
def list_all_product_types(db) -> str:
    """List the name and product id of every product type (50 in the store), sorted by name."""
    return json.dumps({p["name"]: p["product_id"] for p in db["products"].values()}, sort_keys=True)


# ---------------------------------------------------------------- generic

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ToolError("Invalid expression")


@tool("generic")
def calculate(db, expression: str) -> str:
    """Calculate the result of an arithmetic expression, rounded to 2 decimals.

    Args:
        expression: The expression, such as '2 + 2'; digits, + - * / ( ) . and spaces only.
    """
    if not expression.strip() or any(c not in "0123456789+-*/(). " for c in expression):
        raise ToolError("Invalid characters in expression")
    try:
        return str(round(float(_evaluate(ast.parse(expression, mode="eval"))), 2))
    except (SyntaxError, ZeroDivisionError) as exc:
        raise ToolError(f"Invalid expression: {exc}") from None


@tool("generic")
def transfer_to_human_agents(db, summary: str) -> str:
    """Transfer the user to a human agent, with a summary of the user's issue. Only transfer when
    the user explicitly asks for a human, or the issue cannot be solved with the policy and tools.

    Args:
        summary: A summary of the user's issue.
    """
    return "Transfer successful"


# ---------------------------------------------------------------- write

@tool("write")
def cancel_pending_order(db, order_id: str, reason: str) -> dict:
    """Cancel a pending order. Explain the cancellation and get explicit user confirmation (yes)
    first. The status becomes 'cancelled'; gift-card payments are refunded to the card at once,
    others in 5-7 business days. Returns the order after the cancellation.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        reason: The reason for cancellation: 'no longer needed' or 'ordered by mistake'.
    """
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Invalid reason")
    refunds = []
    for payment in order["payment_history"]:
        refunds.append({"transaction_type": "refund", "amount": payment["amount"],
                        "payment_method_id": payment["payment_method_id"]})
        method = _payment(db, order["user_id"], payment["payment_method_id"])
        if _is_gift_card(method):
            method["balance"] = round(method["balance"] + payment["amount"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return order


@tool("write")
def modify_pending_order_address(db, order_id: str, address1: str, address2: str, city: str, state: str,
                                 country: str, zip: str) -> dict:
    """Modify the shipping address of a pending order. Explain the change and get explicit user
    confirmation (yes) first. Returns the order after the change.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.
    """
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


@tool("write")
def modify_pending_order_payment(db, order_id: str, payment_method_id: str) -> dict:
    """Modify the payment method of a pending order. Explain the change and get explicit user
    confirmation (yes) first. A gift card must cover the whole amount. Returns the order.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        payment_method_id: The new payment method id, such as 'gift_card_0000000' or 'credit_card_0000000'.
    """
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    method = _payment(db, order["user_id"], payment_method_id)
    history = order["payment_history"]
    if len(history) != 1 or history[0]["transaction_type"] != "payment":
        raise ToolError("There should be exactly one payment for a pending order")
    old_id, amount = history[0]["payment_method_id"], history[0]["amount"]
    if old_id == payment_method_id:
        raise ToolError("The new payment method should be different from the current one")
    if _is_gift_card(method) and method["balance"] < amount:
        raise ToolError("Insufficient gift card balance to pay for the order")
    history.append({"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id})
    history.append({"transaction_type": "refund", "amount": amount, "payment_method_id": old_id})
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - amount, 2)
    old = _payment(db, order["user_id"], old_id)
    if _is_gift_card(old):
        old["balance"] = round(old["balance"] + amount, 2)
    return order


@tool("write")
def modify_pending_order_items(db, order_id: str, item_ids: list[str], new_item_ids: list[str],
                               payment_method_id: str) -> dict:
    """Modify items of a pending order to other available options of the same products. Can be
    called once per order (the status becomes 'pending (item modified)'). Explain the change and
    get explicit user confirmation (yes) first. Returns the order.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        item_ids: The item ids to modify, each such as '1008292230'; duplicates allowed.
        new_item_ids: The new item ids, position by position, each of the same product as the old one.
        payment_method_id: The payment method that pays or receives the price difference, such as 'gift_card_0000000'.
    """
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be modified")
    _check_items(order, item_ids)
    diff, variants = _price_difference(db, order, item_ids, new_item_ids, allow_same=False)
    method = _payment(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff:
        raise ToolError("Insufficient gift card balance to pay for the new item")
    order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund",
                                     "amount": abs(diff), "payment_method_id": payment_method_id})
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - diff, 2)
    taken: set[int] = set()
    for item_id, variant in zip(item_ids, variants):
        pos = next(i for i, it in enumerate(order["items"]) if it["item_id"] == item_id and i not in taken)
        taken.add(pos)
        order["items"][pos].update(item_id=variant["item_id"], price=variant["price"],
                                   options=dict(variant["options"]))
    order["status"] = "pending (item modified)"
    return order


@tool("write")
def modify_user_address(db, user_id: str, address1: str, address2: str, city: str, state: str,
                        country: str, zip: str) -> dict:
    """Modify the default address of a user. Explain the change and get explicit user
    confirmation (yes) first. Returns the user.

    Args:
        user_id: The user id, such as 'sara_doe_496'.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.
    """
    user = _user(db, user_id)
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


@tool("write")
def return_delivered_order_items(db, order_id: str, item_ids: list[str], payment_method_id: str) -> dict:
    """Return some items of a delivered order; the status becomes 'return requested' and the user
    gets an email on how to return them. Explain the return and get explicit user confirmation
    (yes) first. The refund goes to the original payment method or an existing gift card.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        item_ids: The item ids to return, each such as '1008292230'; duplicates allowed.
        payment_method_id: The payment method that receives the refund, such as 'gift_card_0000000'.
    """
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be returned")
    method = _payment(db, order["user_id"], payment_method_id)
    if not _is_gift_card(method) and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        raise ToolError("Payment method should be the original payment method or a gift card")
    _check_items(order, item_ids)
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return order


@tool("write")
def exchange_delivered_order_items(db, order_id: str, item_ids: list[str], new_item_ids: list[str],
                                   payment_method_id: str) -> dict:
    """Exchange items of a delivered order for other available options of the same products; can
    be done once per order (the status becomes 'exchange requested'). Explain the exchange and
    get explicit user confirmation (yes) first. A gift card must cover a price difference.

    Args:
        order_id: The order id, such as '#W0000000'. Mind the '#' at the beginning.
        item_ids: The item ids to exchange, each such as '1008292230'; duplicates allowed.
        new_item_ids: The new item ids, position by position, each of the same product as the old one.
        payment_method_id: The payment method that pays or receives the price difference, such as 'gift_card_0000000'.
    """
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be exchanged")
    _check_items(order, item_ids)
    diff, _ = _price_difference(db, order, item_ids, new_item_ids, allow_same=True)
    method = _payment(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff:
        raise ToolError("Insufficient gift card balance to pay for the price difference")
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return order


from customers.tau_retail.plants import PLANTS, auth_action  # noqa: E402,F401  (the oracle and planted failures)
