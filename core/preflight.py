"""Pre-flight checks: refuse a launch with the reason and the fix before a job or run exists.

    from core import preflight
    problems = preflight.training(config)          # a core.factory.JobConfig
    problems = preflight.eval_run("shop_zh-prompt", "shop_zh")
    preflight.require(problems)                    # raises PreflightError listing the blocking ones

One function per launch kind (training: lora | prompt | remote; an eval run), used by the CLI
and by the pages, so both refuse the same things with the same words. A problem is "error"
(the launch would fail or produce garbage: refused) or "warning" (shown, the launch goes on).
Checks are cheap: no model is loaded and nothing is called; token counts are estimates
(core.dataset.approx_tokens: one token per CJK character, one per 4 other characters).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass
class Problem:
    what: str
    fix: str
    severity: str = "error"  # error: refused · warning: shown, launch goes on

    def __str__(self) -> str:
        return f"{self.what} — fix: {self.fix}"


class PreflightError(ValueError):
    """The launch was refused; `.problems` holds every blocking problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("refused before launch:\n" + "\n".join(f"- {p}" for p in problems))


def require(problems: list[Problem]) -> list[Problem]:
    """Raise PreflightError when any problem is an error; return the warnings."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise PreflightError(errors)
    return problems


# ---------------------------------------------------------------- models

def model_callable(model: str) -> list[Problem]:
    """A registry name, LiteLLM string or URL that can be called now (key present, base resolvable)."""
    from core import registry

    model = (model or "").strip()
    if not model:
        return [Problem("no model given", "pick a registry model, a LiteLLM string or an OpenAI-compatible URL")]
    if model.startswith(("http://", "https://")):
        return remote_url(model.split("#")[0], "agent URL")
    if os.path.isdir(os.path.expanduser(model)):  # a local model folder (served in-process)
        return []
    entries = registry.load().entries
    if model in entries:
        entry = entries[model]
        if not entry.base_model.strip() and entry.type != "base":
            return [Problem(f"{model}: base_model is empty", f"set base_model of {model} in registry.yaml")]
        ok, why = registry.availability(entry)
        return [] if ok else [Problem(f"{model} cannot be called: {why}", _fix_for(why))]
    if "/" not in model:
        known = ", ".join(sorted(entries)) or "(registry is empty)"
        return [Problem(f"unknown model '{model}'", f"use one of: {known}; or a LiteLLM string such as "
                                                    "gemini/gemini-2.5-flash")]
    ok, why = registry._key_availability(model)
    return [] if ok else [Problem(f"{model} cannot be called: {why}", _fix_for(why))]


def _fix_for(why: str) -> str:
    if why.startswith("set "):
        return f"{why} in the environment of the console (keys are never stored)"
    return "pick another model, or fix its registry entry (python -m core.registry validate)"


def remote_url(url: str | None, what: str) -> list[Problem]:
    """An http(s) URL with a host (a remote job's API base, an agent endpoint)."""
    if not url or not url.strip():
        return [Problem(f"no {what}", f"give the {what}, e.g. https://api.openai.com/v1")]
    parts = urlparse(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [Problem(f"{what} '{url}' is not an http(s) URL with a host",
                        "write it like https://api.openai.com/v1")]
    return []


# ---------------------------------------------------------------- data

def data_present(customer: str, dataset: str | None) -> list[Problem]:
    from core.dataset import dataset_spec, default_dataset

    try:
        key = f"{customer}/{dataset or default_dataset(customer)}"
    except Exception as exc:  # unknown customer: the message lists what exists
        return [Problem(f"customer {customer}: {exc}", "pick a customer shown by `python -m core.dataset list`")]
    try:
        spec = dataset_spec(key)
    except Exception as exc:  # unknown customer or dataset: the message lists what exists
        return [Problem(f"dataset {key}: {exc}", "pick a dataset shown by `python -m core.dataset list`")]
    if not spec.available:
        return [Problem(f"dataset {key}: {spec.path} not found", f"put the data file at {spec.path}")]
    return []


def _budget_rows(ds, include_context: bool) -> list[tuple[int, int, int]]:
    """Per conversation: (system, context, first exchange) token estimates."""
    from core.dataset import approx_tokens
    from core.training import CONTEXT_NOTE, format_context

    rows = []
    for i in range(len(ds)):
        sample = ds[i]
        dialog = sample.dialog
        system = sum(approx_tokens(m.get("content") or "") for m in dialog if m["role"] == "system")
        ctx = approx_tokens(CONTEXT_NOTE + format_context(sample.context)) if include_context and sample.context else 0
        turns = [m for m in dialog if m["role"] in ("user", "assistant")]
        first = next((n for n, m in enumerate(turns) if m["role"] == "assistant"), len(turns) - 1)
        rows.append((system, ctx, sum(approx_tokens(m.get("content") or "") for m in turns[:first + 1])))
    return rows


# Chat templates add a few tokens per message (role markers); 8 a message is generous for small models.
TEMPLATE_TOKENS = 8


def token_budget(ds, max_seq_len: int, include_context: bool) -> list[Problem]:
    """System prompt + context + the first exchange must fit max_seq_len, or nothing is learned."""
    rows = _budget_rows(ds, include_context)
    if not rows:
        return []
    totals = [s + c + t + 3 * TEMPLATE_TOKENS for s, c, t in rows]
    over = sum(1 for t in totals if t > max_seq_len)
    if not over:
        return []
    worst = max(range(len(rows)), key=lambda i: totals[i])
    s, c, t = rows[worst]
    need = int(statistics.quantiles(totals, n=20)[-1]) if len(totals) > 1 else totals[0]
    detail = (f"{over} of {len(rows)} conversations do not fit max_seq_len={max_seq_len} tokens even with "
              f"one exchange (largest: system prompt {s} + context {c} + first exchange {t} ≈ {totals[worst]})")
    fix = (f"raise lora.max_seq_len to at least {need} (95% fit)"
           + (", or set include_context=false" if c else "") + (", or shorten the system prompt" if s else ""))
    severity = "error" if over * 2 > len(rows) else "warning"
    return [Problem(detail + ("; most conversations would train on nothing" if severity == "error" else
                              "; those are truncated and lose their agent turns"), fix, severity)]


# ---------------------------------------------------------------- launches

def lora_settings(lora) -> list[Problem]:
    """Hyperparameters that contradict each other."""
    if lora.max_steps > 0 and lora.warmup_steps >= lora.max_steps:
        return [Problem(f"warmup_steps ({lora.warmup_steps}) >= max_steps ({lora.max_steps}): the learning rate "
                        "never leaves warm-up, the adapter barely moves",
                        f"set lora.warmup_steps below {lora.max_steps} (e.g. {lora.max_steps // 5}) "
                        "or raise lora.max_steps")]
    return []


def lora_base(base_model: str) -> list[Problem]:
    """LoRA needs local weights: a folder or a registry model served in-process (local/...)."""
    from pathlib import Path

    from core import registry

    if not base_model.strip():
        return [Problem("base model is empty", "give a registry model with local weights, e.g. smollm2-135m")]
    if Path(base_model).expanduser().is_dir():
        return []
    entries = registry.load().entries
    entry = entries.get(base_model)
    local = [n for n, e in entries.items() if e.access_point.startswith("local/") and e.type == "base"]
    if entry is None or not entry.access_point.startswith("local/"):
        return [Problem(f"base model '{base_model}' has no local weights to train",
                        f"use a local folder or one of: {', '.join(local) or '(none registered)'}")]
    return []


def _dataset(config) -> str:
    from core.dataset import default_dataset

    return config.dataset or default_dataset(config.customer)


def training(config, *, load=None) -> list[Problem]:
    """Everything a Factory job needs, checked before the job row exists."""
    if config.data_url:
        problems = remote_url(config.data_url, "data service URL")
    else:
        problems = data_present(config.customer, config.dataset)
    if config.method == "lora":
        problems += lora_base(config.base_model) + lora_settings(config.lora)
        if not problems and not config.data_url:
            problems += token_budget((load or _load)(config), config.lora.max_seq_len, config.include_context)
    elif config.method == "prompt":
        problems += model_callable(config.base_model)
    else:
        problems += remote_url(config.remote.base_url, "remote API base URL (remote.base_url)")
        if not os.environ.get(config.remote.api_key_env):
            problems.append(Problem(f"{config.remote.api_key_env} is not set",
                                    f"export {config.remote.api_key_env}=... before starting the console"))
        if not (config.remote.provider_model or config.base_model).strip():
            problems.append(Problem("no provider base model", "set remote.provider_model or base_model"))
    return problems


def _load(config):
    from core.dataset import load_dataset

    return load_dataset(f"{config.customer}/{_dataset(config)}")


def eval_run(model: str, customer: str | None, suite_path: str | None = None) -> list[Problem]:
    """The agent can be called and the suite loads."""
    problems = model_callable(model)
    try:
        from core.eval.suite import load_suite

        load_suite(customer, suite_path)
    except Exception as exc:  # SuiteError names the file, scenario and field
        problems.append(Problem(f"suite does not load: {exc}", "fix the suite file (python -m core.eval validate)"))
    return problems
