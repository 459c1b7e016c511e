"""Scaffold a new client: a working customers/<name>/ folder and data/<name>/ to edit from.

    python -m core.dataset new outfit_en --language en --title "Outfit (en) - online clothing"
    python -m core.dataset check outfit_en/example

Writes customers/<name>/{__init__.py, dataset.py, prompt.md, scenarios.yaml, calibration.yaml}
and data/<name>/example.jsonl. Every file works as written (the example dataset loads, the
suite validates), so each step of README's "Adding a client" can be checked as it is edited.
"""
from __future__ import annotations

import json
import keyword
import re
from pathlib import Path
from string import Template
from typing import get_args

import yaml

from core.paths import CUSTOMERS_DIR, DATA_DIR, ROOT

TEMPLATES = Path(__file__).parent / "templates" / "client"
NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

WORDS = {
    "en": {"result_words": ("resolved", "refunded", "I've sent", "I have sent", "I've updated", "here is how",
                            "you can", "done"),
           "human_words": ("human", "real person", "agent please", "speak to someone", "manager"),
           "complaint_words": ("complaint", "ridiculous", "unacceptable", "lawyer", "scam"),
           "handoff": "I'm passing you to a member of our team now; they will reply here shortly.",
           "who": "describe the client (what it sells, which channel the logs come from)."},
    "zh": {"result_words": ("已为您", "已经为您", "已帮您", "处理完成", "已退款", "已解决", "建议您", "您可以"),
           "human_words": ("转人工", "人工客服", "真人", "找人工"),
           "complaint_words": ("投诉", "差评", "12315", "骗子", "垃圾"),
           "handoff": "您好，正在为您转接人工客服，请稍候。",
           "who": "describe the client (what it sells, which channel the logs come from)."},
}

EXAMPLES = {  # data/<name>/example.jsonl: one resolved, one needing a human, one weak conversation
    "en": [
        [("user", "Hi, my order 1043 arrived with a torn sleeve. Can I get a replacement?"),
         ("assistant", "Sorry about that! I've sent a replacement for order 1043; it ships within 48 hours "
                       "and you can keep the torn one.")],
        [("user", "Where is my refund? This is ridiculous, I want to speak to a manager."),
         ("assistant", "I'm passing you to a member of our team now; they will reply here shortly.")],
        [("user", "hello?"), ("assistant", "Hi, how can I help?")],
    ],
    "zh": [
        [("user", "你好，订单 1043 收到的衣服袖子破了，可以换一件吗？"),
         ("assistant", "非常抱歉！已为您安排补发，订单 1043 的新衣服 48 小时内发出，破损的那件不用寄回。")],
        [("user", "退款到现在还没到账，我要投诉，转人工！"),
         ("assistant", "您好，正在为您转接人工客服，请稍候。")],
        [("user", "在吗"), ("assistant", "在的，请问有什么可以帮您？")],
    ],
}

POLICY_QUESTION = {  # the one category the generic suite has no example of
    "en": {"goal": "ask about the return policy", "user": "How many days do I have to return something?",
           "reference": "You have 7 days from delivery to send back anything unused, and 15 days if it arrived faulty.",
           "contains": ["7 days", "seven days"]},
    "zh": {"goal": "询问退货政策", "user": "买的东西几天内可以退？",
           "reference": "签收后 7 天内、商品未使用可以无理由退货；质量问题 15 天内可退换。",
           "contains": ["7 天", "7天", "七天"]},
}


class ScaffoldError(ValueError):
    """The name is not usable or the client exists already; says which and why."""


def new_client(name: str, language: str, title: str | None = None, *, customers_dir: Path = CUSTOMERS_DIR,
               data_dir: Path = DATA_DIR) -> list[Path]:
    """Write the client's folders; returns the files written. Refuses to touch an existing client."""
    _check_name(name, language, customers_dir, data_dir)
    title = title or name.replace("_", " ").title()
    folder, data = customers_dir / name, data_dir / name
    files = {
        folder / "__init__.py": "",
        folder / "dataset.py": dataset_source(name, language, title),
        folder / "prompt.md": Template((TEMPLATES / f"prompt_{language}.md").read_text(encoding="utf-8"))
        .substitute(title=title, name=name, handoff=WORDS[language]["handoff"]),
        folder / "scenarios.yaml": scenarios_source(name, language, title),
        folder / "calibration.yaml": (TEMPLATES / "calibration.yaml").read_text(encoding="utf-8"),
        data / "example.jsonl": example_source(name, language),
    }
    folder.mkdir(parents=True)
    data.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)


def _check_name(name: str, language: str, customers_dir: Path, data_dir: Path) -> None:
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"client name {name!r} must be lower-case letters, digits and _ (a Python package "
                            f"name), starting with a letter, e.g. outfit_en")
    if language not in WORDS:
        raise ScaffoldError(f"language {language!r} is not one of {', '.join(WORDS)}")
    for existing in (customers_dir / name, data_dir / name / "example.jsonl"):
        if existing.exists():
            raise ScaffoldError(f"{existing} exists already; pick another name or remove it")


def dataset_source(name: str, language: str, title: str) -> str:
    words = WORDS[language]
    cls = "".join(part.title() for part in name.split("_")) + "Dataset"
    return Template((TEMPLATES / "dataset.py.tmpl").read_text(encoding="utf-8")).substitute(
        name=name, title=title, cls=cls, language=language, handoff=words["handoff"], who=words["who"],
        result_words=_tuple(words["result_words"]), human_words=_tuple(words["human_words"]),
        complaint_words=_tuple(words["complaint_words"]),
        result_examples=", ".join(words["result_words"][:4]), human_examples=", ".join(words["human_words"][:3]),
        complaint_examples=", ".join(words["complaint_words"][:3]))


def _tuple(words: tuple) -> str:
    return "(" + ", ".join(json.dumps(w, ensure_ascii=False) for w in words) + ")"


def example_source(name: str, language: str) -> str:
    lines = []
    for n, turns in enumerate(EXAMPLES[language], start=1):
        record = {"id": f"{name}-example-{n}", "messages": [{"role": r, "content": c} for r, c in turns],
                  "context": {"user": {"orders": 3}} if n == 1 else {}, "meta": {"source": "scaffold example"}}
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def scenarios_source(name: str, language: str, title: str) -> str:
    """One example scenario per category: the generic suite's first of that category, localised and
    renamed, as a start to rewrite with the client's products and policies."""
    from core.eval.suite import GENERIC_SUITE, Category, localize, read_yaml

    generic = localize(read_yaml(GENERIC_SUITE), language)
    scenarios = []
    for category in get_args(Category):
        if category == "regression":  # written by the sandbox from flagged sessions, never by hand
            continue
        found = next((s for s in generic["scenarios"] if s["category"] == category), None)
        scenario = dict(found) if found else _policy_question(language)
        scenario.update(id=f"{name}-{category.replace('_', '-')}", category=category)
        scenarios.append(scenario)
    header = Template((TEMPLATES / "scenarios_header.yaml").read_text(encoding="utf-8")).substitute(
        name=name, title=title)
    body = {"name": name, "description": title, "language": language, "policies": [],
            "handoff_phrases": [WORDS[language]["handoff"]], "scenarios": scenarios}
    return header + yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=110)


def _policy_question(language: str) -> dict:
    text = POLICY_QUESTION[language]
    return {"category": "policy_question", "goal": text["goal"],
            "turns": [{"user": text["user"], "reference": text["reference"],
                       "checks": [{"contains": text["contains"]}, {"handoff": False}]}]}


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
