"""The embedded model in a sandbox chat: today's path vs the old one, interleaved in one process.

    .venv/bin/python bench/local_llm_bench.py [--turns 3] [--tokens 128] [--model shop_zh-prompt]
    .venv/bin/python bench/local_llm_bench.py --cold          # also cold start to first reply (subprocesses)
    .venv/bin/python bench/local_llm_bench.py --eval 4        # also 4 eval-style calls at concurrency 1 vs 2

A shop_zh sandbox session on the prompt-engineered model (policy + context + history),
128-token greedy replies, turn by turn:
  old   what CSForge did before: the history rendered into the system prompt (so nothing
        of the prompt repeats between turns), fp32 `model.generate` on the whole prompt;
  ours  `core.llm.stream_chat`: policy and context as a stable system prefix, the turns as
        messages, a prefix KV cache reused across turns; on the engine core.local_provider
        picks: llama.cpp on the Q8_0 GGUF when llama-cpp-python is installed
        (`./setup.sh --llama-cpp`), else transformers with bf16-autocast prefill where the CPU
        has bf16 and int8 one-token steps (CSFORGE_LOCAL_ENGINE=transformers forces that one).
Both run with the same threads, one after the other for each turn, and both see the same
conversation (ours' replies). Printed per turn: time to first token (TTFT), reply time,
decode tokens/s, in wall and CPU seconds (the whole process's, every thread); and the
ratio old/ours. On a shared box the
load average is printed with the figures: compare ratios, not absolute times.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONTEXT = {"order_id": "SZ20240611-0087", "status": "已发货", "carrier": "顺丰", "eta": "6月14日",
           "customer_tier": "金卡会员"}
TURNS = ["你好，我的订单到哪里了？", "能不能快一点？我周五要用。", "如果来不及，我可以退货吗？运费谁出？",
         "好的，那请帮我记下来。"]


def old_render(template: str, messages: list[dict], context: dict, policy: str) -> list[dict]:
    """core.llm.render_prompt as it was: history and question inside the system message."""
    from core.llm import format_context

    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    question = turns[-1]["content"]
    history = "\n".join(f"{'Customer' if m['role'] == 'user' else 'Agent'}: {m['content']}"
                        for m in turns[:-1]) or "(start of conversation)"
    values = {"{context}": format_context(context), "{history}": history, "{question}": question,
              "{policy}": policy}
    system = re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], template)
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": question}]


class _FirstToken:
    """A generate() streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls, self.at, self.cpu_at = 0, None, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:  # the first put is the prompt
            self.at, self.cpu_at = time.perf_counter(), time.process_time()

    def end(self) -> None:
        pass


def old_turn(loaded, messages: list[dict], max_tokens: int) -> dict:
    """TTFT, total and new tokens of the old fp32 generate() path, wall and CPU seconds."""
    import torch

    enc = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    first = _FirstToken()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, streamer=first,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    return {"ttft": (first.at or time.perf_counter()) - start, "total": time.perf_counter() - start,
            "ttft_cpu": (first.cpu_at or time.process_time()) - cpu, "total_cpu": time.process_time() - cpu,
            "tokens": int(out.shape[1] - enc["input_ids"].shape[1]), "prompt": int(enc["input_ids"].shape[1])}


def our_turn(model: str, history: list[dict], max_tokens: int) -> dict:
    """The same figures through core.llm.stream_chat (the first token is the first text piece)."""
    from core import llm

    start, cpu = time.perf_counter(), time.process_time()
    ttft = ttft_cpu = None
    for item in llm.stream_chat(model, history, context=CONTEXT, customer="shop_zh", max_tokens=max_tokens,
                                timeout=600):
        if isinstance(item, str):
            if ttft is None:
                ttft, ttft_cpu = time.perf_counter() - start, time.process_time() - cpu
        else:
            done = item
    assert done.ok, done.error
    return {"ttft": ttft or done.latency_s, "total": time.perf_counter() - start, "ttft_cpu": ttft_cpu or 0.0,
            "total_cpu": time.process_time() - cpu, "tokens": done.output_tokens, "prompt": done.input_tokens,
            "text": done.text}


def session(model: str, turns: int, max_tokens: int) -> list[dict]:
    from core import llm, local_provider as lp, registry

    entry = registry.load().entries[model]
    loaded = lp.load(lp.EMBEDDED_MODEL, engine="transformers")  # the old path's weights, whatever ours runs on
    template, policy = entry.prompt_template or "", llm.policy_text("shop_zh")
    history: list[dict] = []
    rows = []
    for n, text in enumerate(TURNS[:turns], 1):
        history.append({"role": "user", "content": text})
        before = os.getloadavg()[0]
        old = old_turn(loaded, old_render(template, history, CONTEXT, policy), max_tokens)
        ours = our_turn(model, history, max_tokens)
        history.append({"role": "assistant", "content": ours["text"]})
        rows.append({"turn": n, "old": old, "ours": ours, "load": (before + os.getloadavg()[0]) / 2})
    return rows


def _rate(r: dict, cpu: bool) -> float:
    ttft, total = (r["ttft_cpu"], r["total_cpu"]) if cpu else (r["ttft"], r["total"])
    return (r["tokens"] - 1) / (total - ttft) if total > ttft and r["tokens"] > 1 else 0.0


def print_session(rows: list[dict]) -> None:
    """Wall seconds (what a user waits on this box now) and CPU seconds (robust to the load)."""
    print(f"\n{'turn':4} {'':5} {'prompt':>6} {'TTFT s':>7} {'reply s':>8} {'tok/s':>6} | "
          f"{'CPU: TTFT':>9} {'reply':>6} {'tok/s':>6}  load")
    for row in rows:
        for side in ("old", "ours"):
            r = row[side]
            print(f"{row['turn']:<4} {side:5} {r['prompt']:6d} {r['ttft']:7.2f} {r['total']:8.2f} "
                  f"{_rate(r, False):6.1f} | {r['ttft_cpu']:9.2f} {r['total_cpu']:6.2f} {_rate(r, True):6.1f}"
                  f"  {row['load']:.1f}")
        o, u = row["old"], row["ours"]
        print(f"{row['turn']:<4} old/ours: TTFT {o['ttft'] / u['ttft']:.1f}x wall, "
              f"{o['ttft_cpu'] / max(u['ttft_cpu'], 1e-3):.1f}x CPU; reply {o['total'] / u['total']:.1f}x wall, "
              f"{o['total_cpu'] / u['total_cpu']:.1f}x CPU; decode ours/old {_rate(u, True) / _rate(o, True):.2f}x CPU")


def cold_start() -> None:
    """Seconds from a fresh interpreter to the first reply: old route (litellm import + generate) vs ours."""
    old = ("import time; t=time.perf_counter(); import litellm; from core import local_provider as lp; import torch;"
           "m=lp.load(lp.EMBEDDED_MODEL, engine='transformers');"
           "e=m.tokenizer.apply_chat_template([{'role':'user','content':'你好'}],"
           "add_generation_prompt=True,return_dict=True,return_tensors='pt');"
           "m.model.generate(**e,max_new_tokens=16,do_sample=False); print(time.perf_counter()-t)")
    ours = ("import time; t=time.perf_counter(); from core import llm;"
            "c=llm.chat('smollm2-135m',[{'role':'user','content':'你好'}],max_tokens=16); assert c.ok, c.error;"
            "print(time.perf_counter()-t)")
    root = Path(__file__).resolve().parent.parent
    times = {}
    for name, code in (("old", old), ("ours", ours), ("old", old), ("ours", ours)):
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
        times.setdefault(name, []).append(float(out.stdout.strip().splitlines()[-1]))
    print(f"\ncold start to first reply (best of 2): old {min(times['old']):.1f} s, ours {min(times['ours']):.1f} s, "
          f"ratio {min(times['old']) / min(times['ours']):.1f}x   load {os.getloadavg()[0]:.1f}")


def eval_concurrency(calls: int) -> None:
    """Wall time of `calls` independent chats on the embedded model at 1 vs 2 workers."""
    from core import llm

    def one(i: int) -> None:
        c = llm.chat("shop_zh-prompt", [{"role": "user", "content": TURNS[i % len(TURNS)]}],
                     context={**CONTEXT, "n": i}, customer="shop_zh", max_tokens=48, timeout=600)
        assert c.ok, c.error

    walls = {}
    for workers in (1, 2, 1, 2):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(calls)))
        walls.setdefault(workers, []).append(time.perf_counter() - start)
    w1, w2 = min(walls[1]), min(walls[2])
    print(f"\n{calls} eval-style calls: 1 worker {w1:.1f} s, 2 workers {w2:.1f} s (2 vs 1: {w1 / w2:.2f}x; "
          f">= ~1.0 means more workers are not slower)   load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shop_zh-prompt")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--eval", type=int, default=0, metavar="N")
    args = ap.parse_args()
    from core import llama_cpp_engine, local_decode, local_provider as lp, threads

    n = threads.configure()
    engine = llama_cpp_engine.chosen_for(lp.embedded_folder(), None)
    detail = (f"prefill {local_decode.prefill_dtype()}, decode {local_decode.decode_dtype()}"
              if engine == "transformers" else f"{llama_cpp_engine.Q8_FILE}")
    print(f"load average {os.getloadavg()[0]:.1f}; threads {n}; ours on {engine} ({detail})")
    print_session(session(args.model, args.turns, args.tokens))
    if args.eval:
        eval_concurrency(args.eval)
    if args.cold:
        cold_start()


if __name__ == "__main__":
    main()
