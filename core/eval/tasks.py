"""Task scenarios: a simulated customer, a tool environment, and success judged by the final state.

    python -m core.eval run --customer tau_retail --model gemini/gemini-2.5-flash \
        --simulator gemini/gemini-2.5-flash --trials 4 --split test --concurrency 16
    python -m core.eval run --customer tau_retail --model @oracle --trials 1      # must pass 114/114
    python -m core.eval run --customer tau_retail --model @bad:skip_auth          # must fail

A task gives the simulated customer its instructions (reason for contacting, what it knows
and does not know, temperament), an initial state (a patch over the client's JSON state) and
the gold actions. A trial passes when (τ²-bench's rule) the state the agent leaves equals the
state produced by replaying the gold actions on a fresh copy, the facts the agent had to say
appear in its messages, the client's protocol held (authentication before touching a
customer's data, one customer per conversation, an explicit yes before every write), no
per-turn check failed, and the conversation ended on the customer's end token or a handoff,
not on the turn limit. pass^k = mean over tasks of C(c, k) / C(n, k) for c passes in n trials.
Trials run concurrently, each on its own copy-on-write state (core/eval/tools.py).
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from math import comb
from pathlib import Path
from typing import Any, Callable

from core.eval import tools as tl
from core.paths import CUSTOMERS_DIR

END_TOKEN = "###STOP###"
GREETING = "Hi! How can I help you today?"
MAX_TRIALS = 8


@dataclass
class Action:
    name: str
    arguments: dict


@dataclass
class Task:
    """One task scenario; `instructions` is all the simulated customer is told."""

    id: str
    instructions: str
    gold: list[Action] = field(default_factory=list)
    communicate: list[str] = field(default_factory=list)  # facts the agent must say
    assertions: list[str] = field(default_factory=list)   # statements for a judge (not judged without one)
    initial_state: dict | None = None
    split: str | None = None
    category: str = "task"
    opening: str | None = None       # the customer's first message for scripted simulators
    known: str | None = None         # what the customer can answer when asked (scripted simulators)
    greeting: str | None = None      # the agent's fixed first message (default GREETING)
    language: str | None = None


@dataclass
class TaskSettings:
    """Everything that decides a task run's outcome; saved with the run."""

    model: str
    customer: str
    simulator: str | None = None     # model playing the customer; None: the scripted simulator
    trials: int = 1
    split: str | None = None         # train | test | None for all
    tasks: list[str] | None = None   # a subset of task ids
    concurrency: int = 8             # trials in flight
    max_turns: int = 30              # customer messages before a trial counts as not finished
    max_steps: int = 30              # agent tool calls in a row before it must answer (gold plans reach 14)
    timeout_s: float = 120.0         # per model call, retries included
    max_tokens: int = 512
    seed: int = 0
    force: bool = False              # score an agent even when the tool-calling probe fails
    judge: str | None = None

    def __post_init__(self) -> None:
        self.model = str(self.model)
        if not 1 <= self.trials <= MAX_TRIALS:
            raise ValueError(f"--trials must be between 1 and {MAX_TRIALS}, not {self.trials}")


# ---------------------------------------------------------------- loading

def has_tasks(customer: str | None) -> bool:
    folder = CUSTOMERS_DIR / (customer or "")
    return bool(customer) and ((folder / "tasks.py").exists() or (folder / "tasks.yaml").exists())


def load_tasks(customer: str, split: str | None = None, ids: list[str] | None = None) -> list[Task]:
    """The client's tasks: customers/<c>/tasks.py `load_tasks(split)` or customers/<c>/tasks.yaml."""
    folder = CUSTOMERS_DIR / customer
    if (folder / "tasks.py").exists():
        import importlib

        tasks = importlib.import_module(f"customers.{customer}.tasks").load_tasks(split)
    elif (folder / "tasks.yaml").exists():
        tasks = [t for t in tasks_from_yaml(folder / "tasks.yaml") if split is None or t.split == split]
    else:
        raise KeyError(f"customer '{customer}' has no tasks (customers/{customer}/tasks.py or tasks.yaml)")
    if ids:
        known = {t.id for t in tasks}
        missing = [i for i in ids if i not in known]
        if missing:
            raise KeyError(f"{customer}: no task(s) {', '.join(missing)}")
        tasks = [t for t in tasks if t.id in set(ids)]
    return tasks


_TASK_KEYS = {f for f in Task.__dataclass_fields__}


def tasks_from_yaml(path: Path) -> list[Task]:
    """tasks.yaml: `tasks: [{id, instructions, gold: [{name, arguments}], communicate, ...}]`."""
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for n, item in enumerate(raw.get("tasks") or []):
        unknown = sorted(set(item) - _TASK_KEYS)
        if unknown or "id" not in item or "instructions" not in item:
            why = f"unknown field(s) {', '.join(unknown)}" if unknown else "needs id and instructions"
            raise ValueError(f"{path}: task {item.get('id', n)}: {why}")
        gold = [Action(a["name"], dict(a.get("arguments") or {})) for a in item.get("gold") or []]
        out.append(Task(**{**item, "id": str(item["id"]), "gold": gold}))
    return out


def policy_for(customer: str) -> str:
    """The agent's system prompt: the client's `policy()` in tools.py, else its prompt.md."""
    module = tl.tools_module(customer)
    if module is not None and hasattr(module, "policy"):
        return module.policy()
    from core.llm import policy_text

    return policy_text(customer)


# ---------------------------------------------------------------- gold state, cached per task

_GOLD: dict[tuple, tuple] = {}
_GOLD_LOCK = threading.Lock()


def gold_state(env: tl.Environment, task: Task) -> tuple[tl.State, list[str]]:
    """The state after replaying the gold actions on a fresh copy, and the gold calls that failed."""
    key = (env.customer, task.id, id(env.base))
    with _GOLD_LOCK:
        if key not in _GOLD:
            session = env.session(task.initial_state)
            failed = [f"{a.name}: {rec['result']}" for a in task.gold
                      for rec in [session.call(a.name, a.arguments)] if rec["error"] and rec["kind"] == "write"]
            _GOLD[key] = (session.state, failed)
        return _GOLD[key]


# ---------------------------------------------------------------- one trial

@dataclass
class AgentTurn:
    """An agent's answer: text for the customer, or tool calls ({id, name, arguments})."""

    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None


Agent = Callable[[list[dict], list[dict]], AgentTurn]        # (messages, tool schemas) -> turn
Simulator = Callable[[list[dict]], AgentTurn]                 # (conversation as the customer sees it) -> turn


class Trial:
    """Plays one task once: simulator <-> agent <-> tools, then judges the result."""

    def __init__(self, task: Task, env: tl.Environment, agent: Agent, simulator: Simulator,
                 settings: TaskSettings, trial: int, policy: str) -> None:
        self.task, self.env, self.agent, self.sim = task, env, agent, simulator
        self.settings, self.trial = settings, trial
        self.session = env.session(task.initial_state)
        self.messages: list[dict] = [{"role": "system", "content": policy},
                                     {"role": "assistant", "content": task.greeting or env.attr("GREETING", GREETING)}]
        self.turns: list[dict] = []
        self.glitches: list[dict] = []
        self.ended = "max_turns"
        self.cost = {"agent": 0.0, "simulator": 0.0}
        self.tokens = [0, 0]
        self.model_s = 0.0

    def play(self) -> dict:
        start = time.perf_counter()
        try:
            self._loop()
        except Exception as exc:  # a broken agent or tool is a recorded glitch, not a crashed run
            self.glitches.append({"turn": len(self.turns), "kind": "exception",
                                  "message": f"{type(exc).__name__}: {exc}"})
            self.ended = "exception"
        from core.eval import judge_task

        rec = judge_task.judge(self)
        rec["wall_s"] = round(time.perf_counter() - start, 4)
        rec["overhead_s"] = round(max(0.0, rec["wall_s"] - self.model_s), 4)
        return rec

    def _loop(self) -> None:
        for _ in range(self.settings.max_turns):
            said = self.sim(customer_view(self.messages))
            self.model_s += said.latency_s
            self.cost["simulator"] += said.cost_usd
            if said.error:
                self.glitches.append({"turn": len(self.turns), "kind": "simulator", "message": said.error})
                self.ended = "simulator_error"
                return
            text = said.text.strip()
            if END_TOKEN in text or not text:
                self.ended = "customer_stop"
                return
            self.messages.append({"role": "user", "content": text})
            if not self._agent_turn(text):
                return

    def _agent_turn(self, user_text: str) -> bool:
        """Tool calls until the agent answers in text; False when the conversation is over."""
        handoff_tools = set(self.env.attr("HANDOFF_TOOLS", ()))
        handed_off = False
        for _ in range(self.settings.max_steps):
            turn = self.agent(list(self.messages), self.env.schemas)
            self.model_s += turn.latency_s
            self.cost["agent"] += turn.cost_usd
            self.tokens[0] += turn.input_tokens
            self.tokens[1] += turn.output_tokens
            if turn.error:
                kind = "timeout" if "timed out" in turn.error else "error"
                self._turn_record(user_text, "", turn, glitch=kind)
                self.glitches.append({"turn": len(self.turns) - 1, "kind": kind, "message": turn.error})
                self.ended = "agent_error"
                return False
            if turn.tool_calls:
                self._run_calls(turn)
                handed_off = handed_off or any(c["name"] in handoff_tools for c in turn.tool_calls)
                continue
            self.messages.append({"role": "assistant", "content": turn.text})
            self._turn_record(user_text, turn.text, turn, glitch=None if turn.text.strip() else "empty")
            if handed_off:
                self.ended = "handoff"
                return False
            return True
        self.glitches.append({"turn": len(self.turns), "kind": "error",
                              "message": f"more than {self.settings.max_steps} tool calls without answering"})
        self.ended = "max_steps"
        return False

    def _run_calls(self, turn: AgentTurn) -> None:
        calls = []
        for n, call in enumerate(turn.tool_calls):
            cid = call.get("id") or f"call_{len(self.session.calls)}_{n}"
            calls.append({"id": cid, "type": "function",
                          "function": {"name": call["name"], "arguments": _as_json(call.get("arguments"))}})
        self.messages.append({"role": "assistant", "content": turn.text or None, "tool_calls": calls})
        for call, spec in zip(turn.tool_calls, calls):
            rec = self.session.call(call["name"], call.get("arguments") or {}, spec["id"])
            rec["message_index"] = len(self.messages) - 1
            self.messages.append({"role": "tool", "tool_call_id": spec["id"], "name": call["name"],
                                  "content": rec["result"]})

    def _turn_record(self, user_text: str, reply: str, turn: AgentTurn, glitch: str | None) -> None:
        self.turns.append({"turn": len(self.turns), "user": user_text, "reply": reply,
                           "latency_s": round(turn.latency_s, 4), "input_tokens": turn.input_tokens,
                           "output_tokens": turn.output_tokens, "cost_usd": turn.cost_usd,
                           "glitch": glitch, "checks": [], "message_index": len(self.messages) - 1})


def _as_json(arguments: Any) -> str:
    import json

    return arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)


def customer_view(messages: list[dict]) -> list[dict]:
    """The conversation as the customer sees it: text turns only, roles swapped."""
    out = []
    for m in messages:
        if m["role"] in ("system", "tool") or not (m.get("content") or "").strip():
            continue
        out.append({"role": "user" if m["role"] == "assistant" else "assistant", "content": m["content"]})
    return out


# ---------------------------------------------------------------- a run: tasks x trials

def pass_hat(outcomes: dict[str, list[bool]], k: int) -> float | None:
    """τ²-bench's pass^k: mean over tasks of C(c, k) / C(n, k); tasks with fewer than k trials left out."""
    values = [comb(sum(v), k) / comb(len(v), k) for v in outcomes.values() if len(v) >= k]
    return round(sum(values) / len(values), 4) if values else None


def summarize(rows: list[dict], trials: int) -> dict:
    """The usual scores plus pass^1..pass^k and per-task passes."""
    from core.eval import store as es

    summary = es.summarize(rows)
    outcomes: dict[str, list[bool]] = {}
    for r in rows:
        outcomes.setdefault(r["transcript"].get("task", r["scenario"]), []).append(bool(r["passed"]))
    summary["tasks"] = len(outcomes)
    summary["trials"] = trials
    summary["pass_hat"] = {str(k): pass_hat(outcomes, k) for k in range(1, trials + 1)}
    summary["by_task"] = {t: [sum(v), len(v)] for t, v in sorted(outcomes.items(), key=lambda kv: _natural(kv[0]))}
    failing: dict[str, int] = {}
    for r in rows:
        for c in r["checks"]:
            if c["passed"] is False:
                failing[c["kind"]] = failing.get(c["kind"], 0) + 1
    summary["failed_criteria"] = dict(sorted(failing.items()))
    return summary


def _natural(task_id: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", task_id))


def run_tasks(settings: TaskSettings, *, run_id: str | None = None, progress: Callable | None = None,
              agent_factory: Callable | None = None, simulator_factory: Callable | None = None,
              env: tl.Environment | None = None, tasks: list[Task] | None = None, store: bool = True,
              resume: bool = False) -> dict:
    """Run every (task, trial) concurrently; returns {run_id, summary, results}.

    resume: `run_id` is a stored run; only its (task, trial) pairs without a result are played."""
    from core.eval import agents as ag

    env = env or tl.load_environment(settings.customer)
    tasks = tasks if tasks is not None else load_tasks(settings.customer, settings.split, settings.tasks)
    agent_factory = agent_factory or ag.agent_factory(settings, env)
    simulator_factory = simulator_factory or ag.simulator_factory(settings)
    policy = policy_for(settings.customer)
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-tasks-{uuid.uuid4().hex[:4]}"
    capable = ag.probe(settings, agent_factory, env)
    done_before: list[dict] = []
    if resume:
        from core.eval import store as es

        es.set_status(run_id, "running")
        db = es.writer()
        done_before = [r for r in es.results(run_id) if r["passed"] is not None]
    else:
        db = _start(run_id, settings, tasks) if store else None
    rows: list[dict] = []
    if capable["ok"] or settings.force:
        rows = _play_all(tasks, env, settings, agent_factory, simulator_factory, policy, run_id, db, progress,
                         skip={r["scenario"] for r in done_before})
    rows = sorted(done_before + rows, key=lambda r: (_natural(r["transcript"]["task"]), r["transcript"]["trial"]))
    summary = summarize(rows, settings.trials) if rows else {"scenarios": 0, "pass_rate": None, "pass_hat": {}}
    summary.update(run_id=run_id, model=settings.model, customer=settings.customer, kind="tasks",
                   suite_hash=tasks_hash(tasks),
                   split=settings.split, tool_calling=capable, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if store:
        from core.eval import store as es

        es.set_status(run_id, "finished", summary)
        _write_metrics(settings, summary)
    return {"run_id": run_id, "summary": summary, "results": rows}


def tasks_hash(tasks: list[Task]) -> str:
    import hashlib

    from core import store

    return hashlib.sha256(store.dumps([asdict(t) for t in tasks]).encode()).hexdigest()[:12]


def _start(run_id: str, settings: TaskSettings, tasks: list[Task]):
    from core.eval import store as es

    es.create_run(run_id, {**asdict(settings), "kind": "tasks"}, tasks_hash(tasks), settings.customer)
    return es.writer()


def _play_all(tasks, env, settings, agent_factory, simulator_factory, policy, run_id, db, progress,
              skip: set[str] = frozenset()) -> list[dict]:
    from core.eval import store as es

    def one(task: Task, trial: int) -> dict:
        agent = agent_factory(task, trial)
        sim = simulator_factory(task, trial)
        return Trial(task, env, agent, sim, settings, trial, policy).play()

    # longest first (gold length as the estimate): the pool's last wave is then short trials
    jobs = sorted([(t, k) for k in range(settings.trials) for t in tasks if f"{t.id}#{k}" not in skip],
                  key=lambda tk_: -len(tk_[0].gold))
    rows, done = [], len(skip)
    pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="task")
    try:
        futures = [pool.submit(one, t, k) for t, k in jobs]
        for fut in as_completed(futures):
            rec = fut.result()
            if db is not None:
                es.save_result(run_id, rec, db)
            rows.append(_as_row(rec))
            done += 1
            if progress:
                progress(done, len(jobs) + len(skip), rec)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        if db is not None:
            es.set_status(run_id, "interrupted")
        raise
    pool.shutdown(wait=True)
    return sorted(rows, key=lambda r: (_natural(r["transcript"]["task"]), r["transcript"]["trial"]))


def _as_row(rec: dict) -> dict:
    """The shape core.eval.store.results() returns, without a round trip through SQLite."""
    return {"scenario": rec["scenario"], "category": rec["category"], "passed": int(rec["passed"]),
            "transcript": {k: v for k, v in rec.items() if k != "checks"}, "checks": rec["checks"],
            "latency_s": rec["latency_s"], "cost_usd": rec["cost_usd"], "input_tokens": rec["input_tokens"],
            "output_tokens": rec["output_tokens"], "glitches": len(rec["glitches"]),
            "agent_turns": rec["agent_turns"]}


def _write_metrics(settings: TaskSettings, summary: dict) -> None:
    from core import registry

    if settings.tasks or not summary.get("scenarios"):  # a hand-picked subset is not the model's score
        return
    try:
        if settings.model not in registry.load().entries:
            return
        compact = {k: summary.get(k) for k in ("run_id", "finished_at", "tasks", "trials", "split", "pass_rate",
                                               "pass_hat", "error_rate")}
        registry.set_metrics(settings.model, {f"tasks_{settings.customer}": compact})
    except Exception as exc:  # the run is in SQLite; the registry copy is a convenience
        print(f"warning: could not write registry metrics for {settings.model}: {exc}")
