"""Console cold start: rendering a page imports none of the heavy ML libraries (seconds each on 2 cores)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "pages/1_Data.py", "pages/2_Factory.py", "pages/3_Sandbox.py", "pages/4_Scorecard.py",
         "pages/5_Costs.py"]
HEAVY = ["torch", "transformers", "peft", "sentence_transformers", "litellm"]

# Each page renders in turn in one fresh interpreter; after each, the heavy modules loaded so far.
RENDER = """
import json, sys
from streamlit.testing.v1 import AppTest
out = []
for page in sys.argv[1:]:
    at = AppTest.from_file(page, default_timeout=120).run()
    out.append({"page": page, "exceptions": [e.message for e in at.exception], "titles": [t.value for t in at.title],
                "heavy": sorted(m for m in %r if m in sys.modules)})
print(json.dumps(out))
""" % (HEAVY,)


def test_first_render_of_every_page_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", RENDER, *[str(ROOT / p) for p in PAGES]], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["page"] for r in results] == [str(ROOT / p) for p in PAGES]
    for r in results:
        assert r["exceptions"] == [] and r["titles"], r  # the page really rendered
        assert r["heavy"] == [], f"{r['page']} imported {r['heavy']} on its first render"


def test_torch_dataset_base_still_applies_when_torch_comes_after_the_dataset():
    code = ("import sys, core.dataset as d\nds = d.load_dataset('shop_zh/demo')\n"
            "before = 'torch' in sys.modules\nimport torch\n"
            "print(before, isinstance(ds, torch.utils.data.Dataset), len(ds) > 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "True", "True"]


def test_tokenizer_availability_is_known_without_loading_the_tokenizer():
    code = ("import sys\nfrom core.prices import tokens\n"
            "names = {n: tokens.available(n) for n in ('approx', 'o200k', 'deepseek', 'smollm2', 'nosuch')}\n"
            "loaded = [m for m in ('tiktoken', 'tokenizers') if m in sys.modules]\n"
            "agree = all((tokens.counter(n) is not None) == ok for n, ok in names.items())\n"
            "print(names['approx'], names['nosuch'], loaded == [], agree)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", "True", "True"]
