"""Agents and simulated customers for task runs.

Agents (`--model`):
  a registry name, LiteLLM string or OpenAI-compatible URL  core.llm.chat_tools: native function
        calling for providers and URLs; a prompt model or a local model gets the tools in its
        prompt and answers <tool_call>{...}</tool_call> (core.llm's text protocol);
  @oracle        replays the task's gold actions (authenticating first when the gold omits it),
                 states each write and waits for the customer's yes, then says the required facts;
  @bad:KIND      the oracle with one planted failure: skip_auth, no_confirm, or a client plant
                 (tau_retail: wrong_variant, other_user), to prove the judge catches it.
Simulated customers (`--simulator`): a model given the task's instructions, or (default) the
scripted simulator: opens with the task's request, answers "yes" to confirmation questions and
what it knows to other questions, and sends the end token otherwise.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from core.eval import tools as tl
from core.eval.tasks import END_TOKEN, Action, AgentTurn, Task, TaskSettings

BUILTIN_BAD = ("skip_auth", "no_confirm")
_CONFIRM_Q = re.compile(r"confirm|yes/no|\(yes\)|shall i|should i|proceed|确认|是否", re.I)
PING = {"type": "function", "function": {"name": "ping", "description": "Answer a ping.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string", "description": "Any text."}},
                       "required": ["text"]}}}


# ---------------------------------------------------------------- the oracle and its planted variants

def oracle_plan(task: Task, env: tl.Environment) -> list[Action]:
    """The gold actions, with an authentication call first when the gold skips it."""
    plan = list(task.gold)
    auth, owner, make_auth = set(env.attr("AUTH_TOOLS", ())), env.attr("owner"), env.attr("auth_action")
    if not (auth and owner and make_auth) or any(a.name in auth for a in plan):
        return plan
    state = env.new_state(task.initial_state)
    for a in plan:
        who = owner(state, a.name, a.arguments) if a.name in env.tools else None
        if who:
            name, args = make_auth(state, who)
            return [Action(name, args), *plan]
    return plan


def planted_plan(kind: str, task: Task, env: tl.Environment) -> tuple[list[Action], bool] | None:
    """(plan, confirm) for a planted failure; None when it does not apply to this task."""
    plan = oracle_plan(task, env)
    writes = [i for i, a in enumerate(plan) if env.tools.get(a.name) and env.tools[a.name].kind == "write"]
    if kind == "skip_auth":
        auth = set(env.attr("AUTH_TOOLS", ()))
        kept = [a for a in plan if a.name not in auth]
        return (kept, True) if len(kept) < len(plan) else None
    if kind == "no_confirm":
        return (plan, False) if writes and env.attr("CONFIRM_WRITES") else None
    plant = (env.attr("PLANTS") or {}).get(kind)
    if plant is None:
        known = ", ".join(BUILTIN_BAD + tuple(env.attr("PLANTS") or {}))
        raise KeyError(f"unknown planted failure '{kind}'; known: {known}")
    state, replay = env.new_state(task.initial_state), env.session(task.initial_state)
    succeeded = {i for i, a in enumerate(plan) if not replay.call(a.name, a.arguments)["error"]}
    for i in (w for w in writes if w in succeeded):  # planting on a gold write that fails proves nothing
        changed = plant(state, plan[i].name, plan[i].arguments)
        if changed is not None:
            return plan[:i] + [Action(plan[i].name, changed)] + plan[i + 1:], True
    return None


class OracleAgent:
    """Plays a fixed plan: tool calls, a confirmation question before each write, then the facts."""

    def __init__(self, task: Task, env: tl.Environment, plan: list[Action], confirm: bool = True) -> None:
        self.task, self.env, self.queue, self.confirm = task, env, list(plan), confirm
        self.asked = False
        self.confirmed = False
        self.handed_off = False
        self.calls = 0

    def __call__(self, messages: list[dict], tools: list[dict]) -> AgentTurn:
        last = messages[-1]
        if not self.queue:
            return AgentTurn(text=self._closing())
        action = self.queue[0]
        is_write = self.env.tools.get(action.name) is not None and self.env.tools[action.name].kind == "write"
        if is_write and self.confirm and self.env.attr("CONFIRM_WRITES") and not self.confirmed:
            from core.eval.judge_task import is_affirmative

            if self.asked and last["role"] == "user" and is_affirmative(last["content"]):
                self.confirmed = True  # one yes covers every write listed in the question
            else:
                self.asked = True
                return AgentTurn(text=self._question())
        self.queue.pop(0)
        self.calls += 1
        self.handed_off = self.handed_off or action.name in self.env.attr("HANDOFF_TOOLS", ())
        return AgentTurn(tool_calls=[{"id": f"oracle_{self.calls}", "name": action.name,
                                      "arguments": action.arguments}])

    def _question(self) -> str:
        writes = [a for a in self.queue if self.env.tools.get(a.name) and self.env.tools[a.name].kind == "write"]
        steps = "; ".join(f"{n}. {a.name} with {json.dumps(a.arguments, ensure_ascii=False)}"
                          for n, a in enumerate(writes, 1))
        if self.env.attr("LANGUAGE") == "zh":
            return f"我将为您办理：{steps}。请确认是否继续（是/否）？"
        return f"Here is what I will do: {steps}. Do you confirm (yes/no)?"

    def _closing(self) -> str:
        done = "已为您处理完毕。" if self.env.attr("LANGUAGE") == "zh" else "Your request has been handled."
        parts = [done] + [str(x) for x in self.task.communicate]
        if self.handed_off and self.env.attr("HANDOFF_MESSAGE"):
            parts.append(self.env.attr("HANDOFF_MESSAGE"))
        return " ".join(parts)


# ---------------------------------------------------------------- a model under test

class ModelAgent:
    """Any model core.llm can call, with the environment's tools."""

    def __init__(self, settings: TaskSettings, trial: int) -> None:
        self.settings, self.trial = settings, trial

    def __call__(self, messages: list[dict], tools: list[dict]) -> AgentTurn:
        from core import llm

        s = self.settings
        done = llm.chat_tools(s.model, messages, tools, customer=s.customer, temperature=0.0,
                              max_tokens=s.max_tokens, timeout=s.timeout_s, seed=s.seed + self.trial)
        return AgentTurn(text=done.text, tool_calls=list(getattr(done, "tool_calls", None) or []),
                         input_tokens=done.input_tokens, output_tokens=done.output_tokens,
                         latency_s=done.latency_s, cost_usd=done.cost_usd, error=done.error)


def agent_factory(settings: TaskSettings, env: tl.Environment) -> Callable[[Task, int], Any]:
    """(task, trial) -> agent for `settings.model`."""
    model = settings.model
    if model == "@oracle":
        return lambda task, trial: OracleAgent(task, env, oracle_plan(task, env))
    if model.startswith("@bad:"):
        kind = model.split(":", 1)[1]

        def bad(task: Task, trial: int) -> OracleAgent:
            planted = planted_plan(kind, task, env)
            plan, confirm = planted if planted else (oracle_plan(task, env), True)
            return OracleAgent(task, env, plan, confirm)
        return bad
    if model.startswith("@"):
        raise KeyError(f"unknown built-in agent '{model}'; use @oracle or @bad:KIND")
    return lambda task, trial: ModelAgent(settings, trial)


def probe(settings: TaskSettings, factory: Callable, env: tl.Environment) -> dict:
    """Can the agent call tools at all? One call that asks for the `ping` tool."""
    if settings.model.startswith("@"):
        return {"ok": True, "reason": "built-in agent"}
    agent = factory(Task(id="probe", instructions=""), 0)
    turn = agent([{"role": "system", "content": "You are checking that tools work. Call the tool you are asked to."},
                  {"role": "user", "content": "Call the ping tool with text 'ok'."}], [PING])
    if turn.error:
        return {"ok": False, "reason": f"tool call failed: {turn.error}"}
    if any(c.get("name") == "ping" for c in turn.tool_calls):
        return {"ok": True, "reason": "called ping"}
    return {"ok": False, "reason": f"answered in text instead of calling a tool: {turn.text[:120]!r}"}


# ---------------------------------------------------------------- simulated customers

class ScriptedSimulator:
    """Opens with the request, says yes to confirmations, shares what it knows once, then ends."""

    def __init__(self, task: Task) -> None:
        self.task, self.spoke, self.told = task, False, False

    def __call__(self, conversation: list[dict]) -> AgentTurn:
        if not self.spoke:
            self.spoke = True
            return AgentTurn(text=self.task.opening or self.task.instructions)
        said = conversation[-1]["content"] if conversation and conversation[-1]["role"] == "user" else ""
        if _CONFIRM_Q.search(said):
            return AgentTurn(text="yes")
        if ("?" in said or "？" in said) and self.task.known and not self.told:
            self.told = True
            return AgentTurn(text=self.task.known)
        return AgentTurn(text=END_TOKEN)


def simulator_prompt(task: Task) -> str:
    return (f"You play a customer contacting customer service. Your instructions:\n{task.instructions}\n\n"
            "Rules: write only your next message, short, as the customer would; give information only when "
            "asked and never invent any that is not in your instructions; answer confirmation questions "
            f"truthfully according to your instructions. When your request is handled, cannot be handled, or "
            f"you are transferred to a human, reply with only {END_TOKEN}.")


class ModelSimulator:
    """A model playing the customer (temperature 0; the trial number is the seed)."""

    def __init__(self, model: str, task: Task, settings: TaskSettings, trial: int) -> None:
        self.model, self.task, self.settings, self.trial = model, task, settings, trial

    def __call__(self, conversation: list[dict]) -> AgentTurn:
        from core import llm

        done = llm.chat(self.model, [{"role": "system", "content": simulator_prompt(self.task)}, *conversation],
                        temperature=0.0, max_tokens=200, timeout=self.settings.timeout_s,
                        seed=self.settings.seed + self.trial)
        return AgentTurn(text=done.text, latency_s=done.latency_s, cost_usd=done.cost_usd,
                         input_tokens=done.input_tokens, output_tokens=done.output_tokens, error=done.error)


def simulator_factory(settings: TaskSettings) -> Callable[[Task, int], Any]:
    if not settings.simulator or settings.simulator == "@scripted":
        return lambda task, trial: ScriptedSimulator(task)
    return lambda task, trial: ModelSimulator(settings.simulator, task, settings, trial)
