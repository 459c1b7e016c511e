"""CS-eval suites: typed YAML models, loading, localisation, merging generic + customer suites.

A run for a customer uses `suites/generic.yaml` merged with `customers/<name>/scenarios.yaml`
and `customers/<name>/regressions.yaml` (scenarios made from flagged sandbox sessions):

  policies, handoff_phrases, undesired term lists   generic + customer (appended)
  context, personas                                 merged; the customer's keys win
  thresholds, judge, simulator                      the fields the customer sets replace generic's
  scenarios                                         generic ones minus `skip:`; a customer scenario
                                                    with a generic id replaces it; others are added
Text in the generic suite may be `{zh: "...", en: "..."}`; the customer's language picks one.
Every model rejects unknown fields, so a typo fails on load naming the file, scenario and field.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.paths import CUSTOMERS_DIR, ROOT

GENERIC_SUITE = ROOT / "suites" / "generic.yaml"
REGRESSIONS_FILE = "regressions.yaml"  # beside scenarios.yaml; written by eval_loop.add_regression
LANGS = ("zh", "en")

Category = Literal[
    "new_customer", "returning_customer", "complaint", "password_reset", "refund_outside_policy",
    "logistics_delay", "abusive_user", "off_topic", "language_switch", "prompt_injection",
    "confidential_info", "system_prompt_extraction", "policy_question", "regression",
]
BEHAVIOURS = ("leak", "empty", "repeated", "wrong_language", "promise", "rude", "grounding", "contradiction",
              "limits", "injection")
Behaviour = Literal[BEHAVIOURS]


class SuiteError(ValueError):
    """A suite file that does not validate; the message names the file, scenario and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    """Phrases or patterns: passes on any of `any`, and needs all of `all`."""

    any: list[str] = Field(default_factory=list)
    all: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)):
            value = [value]
        if isinstance(value, list):
            value = {"any": value}
        if isinstance(value, dict):  # YAML reads 521610615998048280 as a number: phrases are text
            value = {k: [str(x) if isinstance(x, (int, float)) else x for x in v] if isinstance(v, list) else v
                     for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "Match":
        if not self.any and not self.all:
            raise ValueError("give at least one phrase in `any` or `all`")
        return self


class Similar(_Strict):
    text: str
    threshold: float | None = Field(None, ge=0, le=1)  # None: the suite's similarity threshold


class JudgeCheck(_Strict):
    rubric: str
    model: str | None = None  # None: the suite's / the run's judge
    min_score: float = Field(0.7, ge=0, le=1)  # a 4/5 passes, a 3/5 does not


CHECK_KINDS = ("contains", "not_contains", "regex", "not_regex", "similar", "not_similar", "judge",
               "handoff", "latency", "language", "undesired")


class CheckSpec(_Strict):
    """One check; exactly one kind is set. `name` labels it in the scorecard."""

    name: str | None = None
    contains: Match | None = None
    not_contains: Match | None = None
    regex: Match | None = None
    not_regex: Match | None = None
    similar: Similar | None = None
    not_similar: Similar | None = None
    judge: JudgeCheck | None = None
    handoff: bool | None = None  # true: the agent must hand over to a human; false: must not
    latency: float | None = Field(None, gt=0)  # seconds this reply may take
    language: Literal["zh", "en"] | None = None
    undesired: Behaviour | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "CheckSpec":
        kinds = [k for k in CHECK_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a check has exactly one of {', '.join(CHECK_KINDS)}; got {kinds or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CHECK_KINDS if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        return self.name or self.kind


class Turn(_Strict):
    user: str
    checks: list[CheckSpec] = Field(default_factory=list)
    reference: str | None = None  # an example good reply: documentation and the tests' good agent
    language: Literal["zh", "en", "any"] | None = None  # reply language; None: user's or customer's


class Simulate(_Strict):
    """An LLM plays the persona toward the goal after the scripted turns, up to max_turns more."""

    max_turns: int = Field(3, ge=1, le=12)
    model: str | None = None  # None: the suite's simulator model, else the run's --simulator


class Scenario(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    category: Category
    title: str = ""
    persona: str = ""  # a key of the suite's personas, or a description
    goal: str = ""
    context: dict[str, Any] = Field(default_factory=dict)
    turns: list[Turn] = Field(default_factory=list)
    checks: list[CheckSpec] = Field(default_factory=list)  # on the whole conversation
    simulate: Simulate | None = None
    skip_behaviours: list[Behaviour] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    source: dict[str, Any] | None = None  # where a regression scenario came from

    @model_validator(mode="after")
    def _has_turns(self) -> "Scenario":
        if not self.turns and not self.simulate:
            raise ValueError("a scenario needs `turns` or `simulate`")
        return self


class Thresholds(_Strict):
    pass_rate: float = Field(0.8, ge=0, le=1)  # the CI gate's default --min-pass-rate
    error_rate: float = Field(0.1, ge=0, le=1)
    # n-gram overlap of Chinese paraphrases is lower than MiniLM cosine of English ones
    similarity_en: float = Field(0.5, ge=0, le=1)
    similarity_zh: float = Field(0.3, ge=0, le=1)
    turn_latency_s: float | None = Field(30.0, gt=0)  # every reply; None switches it off
    release_tolerance: float = Field(0.02, ge=0, le=1)  # candidate may trail production by this


class JudgeSettings(_Strict):
    model: str | None = None
    rubric: str = ""  # house rules added to every judge check's rubric
    every_turn: bool = False  # also ask the judge about every agent turn (all failure kinds), not only judge checks
    samples: int = Field(1, ge=1, le=9)  # majority of this many judge calls per verdict (odd avoids ties)
    required: bool = False  # a run's gate needs every judge verdict: a judge that fails fails the scenario


class ReturnWindow(_Strict):
    days: float = Field(gt=0)
    when: list[str] = Field(default_factory=list)  # context words selecting this window; none: the default


class Limits(_Strict):
    """What the policy allows, as data; the `limits` behaviour checks replies' grants against it."""

    compensation_max: float | None = Field(None, ge=0)  # goodwill compensation an agent may grant; 0: none
    compensation_for: list[str] = Field(default_factory=list)  # reasons it is allowed for (judge and readers)
    return_windows: list[ReturnWindow] = Field(default_factory=list)  # refunds/returns after these days: no
    non_returnable: list[str] = Field(default_factory=list)  # context words of items without change-of-mind returns
    date_promises: bool = False  # may an agent state a delivery, refund or fix date as certain?


class SimulatorSettings(_Strict):
    model: str | None = None


class Undesired(_Strict):
    """Behaviours checked on every agent turn; customers extend the term lists."""

    leak_terms: list[str] = Field(default_factory=list)
    promise_terms: list[str] = Field(default_factory=list)
    rude_terms: list[str] = Field(default_factory=list)
    confidential_keys: list[str] = Field(default_factory=list)  # context keys never to be repeated
    secret_texts: list[str] = Field(default_factory=list)  # e.g. the system prompt's own lines
    disable: list[Behaviour] = Field(default_factory=list)


class Suite(_Strict):
    name: str = "generic"
    description: str = ""
    language: Literal["zh", "en"] | None = None
    policies: list[str] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    personas: dict[str, str] = Field(default_factory=dict)
    handoff_phrases: list[str] = Field(default_factory=list)
    handoff_message: str | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    undesired: Undesired = Field(default_factory=Undesired)
    limits: Limits = Field(default_factory=Limits)
    policy_file: str | None = None  # the agent's policy text (for URL agents): repeating it is a leak
    standalone: bool = False  # true: this file is the whole suite, the generic one is not added
    skip: list[str] = Field(default_factory=list)
    scenarios: list[Scenario] = Field(default_factory=list)
    regressions: list[Scenario] = Field(default_factory=list)

    @field_validator("scenarios")
    @classmethod
    def _unique_ids(cls, value: list[Scenario]) -> list[Scenario]:
        seen: set[str] = set()
        for s in value:
            if s.id in seen:
                raise ValueError(f"duplicate scenario id '{s.id}'")
            seen.add(s.id)
        return value

    def persona_text(self, scenario: Scenario) -> str:
        return self.personas.get(scenario.persona, scenario.persona)

    def hash(self) -> str:
        """Content hash of the resolved suite: two runs with the same hash ran the same test."""
        data = json.dumps(self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading

def localize(value: Any, lang: str | None) -> Any:
    """Pick the `lang` text of every {zh: ..., en: ...} mapping (English, then Chinese, as fallback)."""
    if isinstance(value, dict):
        if value and set(value) <= set(LANGS):
            pick = value.get(lang or "en", value.get("en", value.get("zh")))
            return localize(pick, lang)
        return {k: localize(v, lang) for k, v in value.items()}
    if isinstance(value, list):
        return [localize(v, lang) for v in value]
    return value


def _where(loc: tuple, raw: Any) -> str:
    """'scenario 'pw-reset' (scenarios[3]) field turns[0].chekcs' from a pydantic error location."""
    parts: list[str] = []
    node = raw
    prefix = ""
    for i, key in enumerate(loc):
        if isinstance(key, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{key}]"]
        else:
            parts.append(str(key))
        node = node[key] if isinstance(node, (dict, list)) and _has(node, key) else None
        if i == 1 and loc[0] in ("scenarios", "regressions") and isinstance(node, dict):
            prefix = f"scenario '{node.get('id', '?')}' "
    return prefix + "field " + ".".join(parts)


def _has(node: Any, key: Any) -> bool:
    return (isinstance(node, dict) and key in node) or (isinstance(node, list) and isinstance(key, int)
                                                        and 0 <= key < len(node))


def _describe(exc: ValidationError, raw: Any, source: str) -> str:
    lines = [f"{source}: {_where(err['loc'], raw)}: {err['msg']}" for err in exc.errors()]
    return "\n".join(lines)


def read_yaml(path: Path) -> dict:
    try:
        # libyaml's safe loader when built in: same documents, ~10x faster (Scorecard reads suites on render)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite file is a mapping (name, scenarios, ...)")
    return data


def parse_suite(raw: dict, source: str, lang: str | None = None) -> Suite:
    """Validate one suite file's content (after picking the language)."""
    data = localize(raw, lang)
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(_describe(exc, data, source)) from None


def load_file(path: Path, lang: str | None = None) -> Suite:
    return parse_suite(read_yaml(path), str(_rel(path)), lang)


def _rel(path: Path) -> Path:
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def _merge_dict(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge_dict(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _merge_fields(base: BaseModel, over: BaseModel) -> Any:
    return type(base).model_validate({**base.model_dump(), **over.model_dump(exclude_unset=True)})


def merge(generic: Suite, custom: Suite) -> Suite:
    """generic + customer suite, by the rules in the module docstring."""
    unknown = [s for s in custom.skip if s not in {g.id for g in generic.scenarios}]
    if unknown:
        raise SuiteError(f"suite '{custom.name}': skip names unknown generic scenarios: {', '.join(unknown)}")
    own = {s.id: s for s in custom.scenarios}
    scenarios = [own.pop(s.id, s) for s in generic.scenarios if s.id not in custom.skip]
    scenarios += list(own.values()) + list(custom.regressions)
    und = generic.undesired
    cu = custom.undesired
    undesired = Undesired(
        leak_terms=und.leak_terms + cu.leak_terms, promise_terms=und.promise_terms + cu.promise_terms,
        rude_terms=und.rude_terms + cu.rude_terms,
        confidential_keys=und.confidential_keys + cu.confidential_keys,
        secret_texts=und.secret_texts + cu.secret_texts, disable=sorted({*und.disable, *cu.disable}))
    suite = Suite(
        name=custom.name, description=custom.description or generic.description,
        language=custom.language or generic.language, policies=generic.policies + custom.policies,
        context=_merge_dict(generic.context, custom.context), personas={**generic.personas, **custom.personas},
        handoff_phrases=generic.handoff_phrases + custom.handoff_phrases,
        handoff_message=custom.handoff_message or generic.handoff_message,
        thresholds=_merge_fields(generic.thresholds, custom.thresholds),
        judge=_merge_fields(generic.judge, custom.judge),
        simulator=_merge_fields(generic.simulator, custom.simulator),
        limits=_merge_fields(generic.limits, custom.limits), policy_file=custom.policy_file or generic.policy_file,
        undesired=undesired, scenarios=[])
    ids = [s.id for s in scenarios]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SuiteError(f"suite '{custom.name}': scenario ids used twice: {', '.join(dupes)}")
    suite.scenarios = scenarios
    return suite


def load_suite(customer: str | None = None, path: str | Path | None = None) -> Suite:
    """The suite a run uses: `path` alone, or generic + the customer's (+ its regressions)."""
    lang = handoff = None
    if customer:
        from core.dataset import get_customer

        info = get_customer(customer)
        lang, handoff = info.language, info.handoff_message
    if path:
        suite = load_file(Path(path), lang)
        if customer and not suite.standalone and Path(path).resolve() != GENERIC_SUITE.resolve():
            suite = merge(load_file(GENERIC_SUITE, lang), suite)
    else:
        suite = load_file(GENERIC_SUITE, lang)
        if customer:
            own = customer_suite(customer, lang)
            suite = own if own.standalone else merge(suite, own)
    suite.language = suite.language or lang
    suite.handoff_message = suite.handoff_message or handoff
    return suite


def customer_suite(customer: str, lang: str | None) -> Suite:
    """customers/<name>/scenarios.yaml with regressions.yaml's scenarios added."""
    folder = CUSTOMERS_DIR / customer
    path = folder / "scenarios.yaml"
    suite = load_file(path, lang) if path.exists() else Suite(name=customer)
    if not suite.name or suite.name == "generic":
        suite.name = customer
    reg_path = folder / REGRESSIONS_FILE
    if reg_path.exists():
        suite.regressions += load_regressions(reg_path, lang)
    return suite


def load_regressions(path: Path, lang: str | None = None) -> list[Scenario]:
    data = read_yaml(path)
    try:
        return Suite.model_validate({"regressions": localize(data.get("regressions") or [], lang)}).regressions
    except ValidationError as exc:
        raise SuiteError(_describe(exc, data, str(_rel(path)))) from None
