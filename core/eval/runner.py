"""CS-eval runner: plays every scenario against an agent, checks each reply, stores the results.

Scenarios run concurrently on a thread pool (the work is waiting on the model, so threads
suffice; LiteLLM does the calling). Each finished scenario is written to SQLite at once, so
an interrupted run loses only the scenarios in flight and `resume` picks up the rest. Calls
use temperature 0 and a fixed seed; identical calls are served from a file cache under
$CSFORGE_HOME/cache/eval (only successful, non-empty replies are cached).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.eval import checks as ck
from core.eval import text as tx
from core import store
from core.eval.suite import Scenario, Suite, Turn, load_suite
from core.paths import home_dir


@dataclass
class RunSettings:
    """Everything that decides a run's outcome; saved with the run so it can be resumed."""

    model: str
    customer: str | None = None
    suite_path: str | None = None
    concurrency: int = 8  # scenarios in flight; providers rate-limit beyond a few dozen
    timeout_s: float = 60.0  # per agent call, retries included
    max_tokens: int = 256  # a support reply is two or three sentences
    temperature: float = 0.0  # reproducible runs
    seed: int = 0
    retries: int = 1
    cache: bool = True
    judge: str | None = None  # default judge model when the suite names none
    simulator: str | None = None  # default model playing the customer in `simulate` scenarios
    only: list[str] | None = None  # scenario ids or categories to play (None: all); see core.eval.subset
    latency_budget_s: float | None = None  # per-turn budget for this run (None: the suite's; 0: off)

    def __post_init__(self) -> None:
        self.model = str(self.model)  # a str subclass (a test server's URL) would not serialise


# ---------------------------------------------------------------- calling, with a cache

class Caller:
    """core.llm.chat with the run's settings and an on-disk cache of identical calls."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self._prints: dict[str, str] = {}
        self.folder = home_dir("cache", "eval")

    def fingerprint(self, model: str) -> str:
        """What a model name stands for now (registry entry chain, customer policy), for cache keys."""
        if model not in self._prints:
            parts: list[Any] = [model]
            if not model.startswith(("http://", "https://")):
                from core import llm, registry

                entries = registry.load().entries
                name = model
                for _ in range(6):
                    entry = entries.get(name)
                    if entry is None:
                        break
                    parts.append(entry.model_dump(mode="json", exclude={"metrics", "status", "created_at"}))
                    name = entry.base_model if entry.type == "prompt" else entry.access_point
                parts.append(llm.policy_text(self.settings.customer))
            self._prints[model] = hashlib.sha256(store.dumps(parts).encode()).hexdigest()
        return self._prints[model]

    def __call__(self, model: str, messages: list[dict], context: dict | None = None,
                 max_tokens: int | None = None) -> Any:
        from core import llm

        s = self.settings
        max_tokens = max_tokens or s.max_tokens
        key = hashlib.sha256(store.dumps([self.fingerprint(model), messages, context, s.customer,
                                          s.temperature, s.seed, max_tokens]).encode()).hexdigest()
        path = self.folder / key[:2] / f"{key}.json"
        if s.cache and path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            done = llm.Completion(**data)
            done.cached = True  # type: ignore[attr-defined]
            return done
        done = llm.chat(model, messages, context=context, customer=s.customer, temperature=s.temperature,
                        max_tokens=max_tokens, timeout=s.timeout_s, seed=s.seed, retries=s.retries)
        if s.cache and done.ok and done.text.strip():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
            tmp.write_text(store.dumps(asdict(done)), encoding="utf-8")
            os.replace(tmp, path)
        return done


# ---------------------------------------------------------------- one scenario

def make_env(suite: Suite, settings: RunSettings, caller: Caller) -> ck.Env:
    knowledge = policy_knowledge(suite, settings.customer)
    return ck.Env(language=suite.language, handoff_message=suite.handoff_message,
                  handoff_phrases=suite.handoff_phrases, undesired=suite.undesired,
                  thresholds=suite.thresholds, policies=suite.policies,
                  secrets=suite.undesired.secret_texts + prompt_secrets(settings.model) + suite.policies
                  + ([knowledge] if knowledge else []),
                  knowledge=knowledge, limits=suite.limits, judge_every_turn=suite.judge.every_turn,
                  judge_samples=suite.judge.samples, judge_required=suite.judge.required,
                  judge_model=suite.judge.model or settings.judge, judge_rubric=suite.judge.rubric,
                  call=lambda model, messages: caller(model, messages, max_tokens=400))


def policy_knowledge(suite: Suite, customer: str | None) -> str:
    """The policy text the agent works from: the customer's prompt.md and the suite's policy_file."""
    from core import llm
    from core.paths import ROOT

    parts = [llm.policy_text(customer)]
    if suite.policy_file:
        path = Path(suite.policy_file)
        parts.append((path if path.is_absolute() else ROOT / path).read_text(encoding="utf-8"))
    return "\n\n".join(p for p in parts if p)


def prompt_secrets(model: str) -> list[str]:
    """The fixed text of a prompt-type model's template: repeating it is a system-prompt leak."""
    import re

    if model.startswith(("http://", "https://")):
        return []
    from core import registry

    entry = registry.load().entries.get(model)
    if entry is None or not entry.prompt_template:
        return []
    return [p for p in re.split(r"\{\w+\}", entry.prompt_template) if len(p.strip()) >= 20]


def _confidential(context: dict, keys: list[str]) -> list[str]:
    found: list[str] = []

    def walk(node: Any, hidden: bool) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, hidden or k in keys)
        elif isinstance(node, list):
            for v in node:
                walk(v, hidden)
        elif hidden and node is not None:
            found.append(str(node))
    walk(context, False)
    return found


def expected_languages(turn_language: str | None, user: str, suite_language: str | None) -> set[str] | None:
    """A reply may be in the customer's language or the user's; a turn can pin one ('any': no check)."""
    if turn_language == "any":
        return None
    if turn_language:
        return {turn_language}
    allowed = {lang for lang in (suite_language, tx.detect_language(user)) if lang}
    return allowed or None


def _run_checks(named: list[tuple[str, str, ck.Check, bool]], ctx: ck.Ctx) -> list[dict]:
    out = []
    for name, kind, check, undesired in named:
        try:
            result = check(ctx)
        except Exception as exc:  # a broken check is a recorded failure, not a crashed run
            result = ck.Result(False, 0.0, f"check raised {type(exc).__name__}: {exc}")
        out.append({"name": name, "kind": kind, "passed": result.passed, "score": round(result.score, 4),
                    "reason": result.reason, "undesired": undesired} | (getattr(result, "detail", None) or {}))
    return out


class ScenarioRun:
    """Plays one scenario: scripted turns, then optional simulated ones; checks every reply."""

    def __init__(self, scenario: Scenario, suite: Suite, settings: RunSettings, caller: Caller, env: ck.Env):
        self.sc, self.suite, self.settings, self.call, self.env = scenario, suite, settings, caller, env
        self.context = {**suite.context, **scenario.context}
        self.confidential = _confidential(self.context, suite.undesired.confidential_keys)
        self.messages: list[dict] = []
        self.turns: list[dict] = []
        self.glitches: list[dict] = []
        self.spent: list[float] = []

    def play(self) -> dict:
        for turn in self.sc.turns:
            if not self._turn(turn):
                break
        else:
            if self.sc.simulate:
                self._simulate()
        return self._record()

    def _turn(self, turn: Turn, simulated: bool = False) -> bool:
        """One user message and the agent's reply; False when the conversation cannot go on."""
        self.messages.append({"role": "user", "content": turn.user})
        reply = self.call(self.settings.model, list(self.messages), self.context)
        rec = {"turn": len(self.turns), "user": turn.user, "reply": reply.text, "latency_s": round(reply.latency_s, 4),
               "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
               "cost_usd": reply.cost_usd, "cached": bool(getattr(reply, "cached", False)),
               "simulated": simulated, "glitch": None, "checks": []}
        self.turns.append(rec)
        if reply.error:
            kind = "timeout" if "timed out" in reply.error else "error"
            self._glitch(rec, kind, reply.error)
            return False
        if not tx.content_chars(reply.text):
            self._glitch(rec, "empty", "the agent returned an empty reply")
        self.messages.append({"role": "assistant", "content": reply.text})
        ctx = ck.Ctx(reply.text, [t["reply"] for t in self.turns], turn.user, list(self.messages),
                     reply.latency_s, self.env, expected_languages(turn.language, turn.user, self.suite.language),
                     self.confidential, self.spent, context=self.context)
        named = [(spec.label, spec.kind, ck.build(spec), False) for spec in turn.checks]
        if self.suite.thresholds.turn_latency_s:
            named.append(("latency budget", "latency", ck.latency(self.suite.thresholds.turn_latency_s), False))
        named += [(name, "undesired", check, True) for name, check in ck.undesired_checks(self.env, self.sc.skip_behaviours)]
        rec["checks"] = _run_checks(named, ctx)
        return True

    def _glitch(self, rec: dict, kind: str, message: str) -> None:
        rec["glitch"] = kind
        self.glitches.append({"turn": rec["turn"], "kind": kind, "message": message})

    def _simulate(self) -> None:
        model = self.sc.simulate.model or self.suite.simulator.model or self.settings.simulator
        if not model:
            self.glitches.append({"turn": None, "kind": "skipped",
                                  "message": "simulate: no simulator model (suite simulator.model or --simulator)"})
            return
        for _ in range(self.sc.simulate.max_turns):
            said = self.call(model, simulator_messages(self.sc, self.suite, self.messages), None, 200)
            text = (said.text or "").strip()
            if said.error:
                self.glitches.append({"turn": None, "kind": "simulator", "message": said.error})
                return
            if not text or "[END]" in text.upper():
                return
            if not self._turn(Turn(user=text), simulated=True):
                return

    def _record(self) -> dict:
        conv = []
        replies = [t["reply"] for t in self.turns]
        if self.sc.checks and replies:
            ctx = ck.Ctx("\n".join(replies), replies, self.turns[-1]["user"], list(self.messages),
                         max(t["latency_s"] for t in self.turns), self.env, None, self.confidential, self.spent,
                         conversation=True, context=self.context)
            conv = _run_checks([(s.label, s.kind, ck.build(s), False) for s in self.sc.checks], ctx)
        all_checks = [c | {"turn": t["turn"]} for t in self.turns for c in t["checks"]] + \
                     [c | {"turn": None} for c in conv]
        agent_glitches = [g for g in self.glitches if g["kind"] in ("timeout", "error", "empty", "exception")]
        # a judge that failed to judge fails safe: the scenario is not judged, so it does not pass
        not_judged = sum(1 for c in all_checks if c.get("not_judged"))
        passed = not agent_glitches and bool(self.turns) and not not_judged and \
            all(c["passed"] is not False for c in all_checks)
        bad_turns = sum(1 for t in self.turns if t["glitch"] or any(
            c["undesired"] and c["passed"] is False for c in t["checks"]))
        return {"scenario": self.sc.id, "category": self.sc.category, "passed": passed, "not_judged": not_judged,
                "turns": self.turns, "conversation_checks": conv, "checks": all_checks,
                "glitches": self.glitches, "agent_turns": len(self.turns), "bad_turns": bad_turns,
                "latency_s": sum(t["latency_s"] for t in self.turns),
                "cost_usd": sum(t["cost_usd"] for t in self.turns), "judge_cost_usd": sum(self.spent),
                "input_tokens": sum(t["input_tokens"] for t in self.turns),
                "output_tokens": sum(t["output_tokens"] for t in self.turns),
                "persona": self.suite.persona_text(self.sc), "goal": self.sc.goal, "title": self.sc.title}


def simulator_messages(sc: Scenario, suite: Suite, messages: list[dict]) -> list[dict]:
    """The simulated customer sees the conversation with roles swapped."""
    lang = {"zh": "Simplified Chinese", "en": "English"}.get(suite.language or "", "the customer's language")
    system = (f"You play a customer talking to a customer-service agent. Persona: {suite.persona_text(sc)}. "
              f"Goal: {sc.goal or sc.title}. Write only your next message, short, in {lang}. When your goal "
              f"is met, or it clearly will not be, answer exactly [END].")
    swapped = [{"role": "assistant" if m["role"] == "user" else "user", "content": m["content"]} for m in messages]
    return [{"role": "system", "content": system}, *swapped]


def play(scenario: Scenario, suite: Suite, settings: RunSettings, caller: Caller, env: ck.Env) -> dict:
    """Run one scenario; an unexpected exception becomes a recorded glitch."""
    run = ScenarioRun(scenario, suite, settings, caller, env)
    try:
        return run.play()
    except Exception as exc:
        run.glitches.append({"turn": len(run.turns), "kind": "exception", "message": f"{type(exc).__name__}: {exc}"})
        return run._record()


# ---------------------------------------------------------------- a whole run

Progress = Callable[[int, int, dict | None], None]


def new_run_id(model: str) -> str:
    import re

    slug = re.sub(r"[^A-Za-z0-9]+", "-", model.split("#")[0]).strip("-")[-24:]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{uuid.uuid4().hex[:4]}"


def run(settings: RunSettings, *, run_id: str | None = None, resume: bool = False,
        suite: Suite | None = None, progress: Progress | None = None) -> dict:
    """Run (or resume) a suite against `settings.model`; returns the stored run with its summary."""
    from core.eval import store as es

    from core.eval.subset import narrow

    suite = narrow(suite or load_suite(settings.customer, settings.suite_path), settings.only,
                   settings.latency_budget_s)
    suite_hash = suite.hash()
    if resume:
        old = es.get_run(run_id or "")
        if old is None:
            raise ValueError(f"no eval run '{run_id}' to resume")
        if old["suite_hash"] != suite_hash:
            raise ValueError(f"run {run_id} used suite {old['suite_hash']}; the suite is now {suite_hash} "
                             "(it changed since): start a new run")
        done = es.done_scenarios(run_id)
        es.set_status(run_id, "running")
    else:
        run_id = run_id or new_run_id(settings.model)
        es.create_run(run_id, asdict(settings), suite_hash, suite.name)
        done = set()
    pending = [s for s in suite.scenarios if s.id not in done]
    total, finished = len(suite.scenarios), len(suite.scenarios) - len(pending)
    caller = Caller(settings)
    env = make_env(suite, settings, caller)
    if progress:
        progress(finished, total, None)
    pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="eval")
    db = es.writer()
    try:
        futures = [pool.submit(play, sc, suite, settings, caller, env) for sc in pending]
        for fut in as_completed(futures):
            rec = fut.result()
            es.save_result(run_id, rec, db)  # the main thread is the only writer
            finished += 1
            if progress:
                progress(finished, total, rec)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        es.set_status(run_id, "interrupted")
        raise
    pool.shutdown(wait=True)
    rows = es.results(run_id)  # read and decoded once: the summary and the all-failed test share it
    summary = es.summarize(rows)
    summary.update(run_id=run_id, model=settings.model, customer=settings.customer or suite.name,
                   suite_hash=suite_hash, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    from core.eval.report import all_calls_failed

    summary["all_calls_failed"] = all_calls_failed(rows)
    if summary["all_calls_failed"]:  # no reply at all: not a 0% scorecard, a run that never reached the agent
        es.set_status(run_id, "failed", summary)
        return es.get_run(run_id)
    es.set_status(run_id, "finished", summary)
    _write_metrics(settings, suite, summary)
    return es.get_run(run_id)


METRIC_KEYS = ("run_id", "suite_hash", "finished_at", "scenarios", "pass_rate", "error_rate", "latency_p50_s",
               "latency_p95_s", "cost_per_session_usd", "by_category")


def _write_metrics(settings: RunSettings, suite: Suite, summary: dict) -> None:
    """A registry model's entry gets the summary under metrics.cs_eval_<customer>."""
    from core import registry

    try:
        if settings.model not in registry.load().entries:
            return
        compact = {k: summary[k] for k in METRIC_KEYS if k in summary}
        compact["by_category"] = {k: v["pass_rate"] for k, v in summary.get("by_category", {}).items()}
        registry.set_metrics(settings.model, {registry.eval_key(settings.customer or suite.name): compact})
    except Exception as exc:  # the run's results are in SQLite; the registry copy is a convenience
        print(f"warning: could not write registry metrics for {settings.model}: {exc}")
