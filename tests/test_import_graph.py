"""Model access has no import circle: registry <- local_targets <- local_provider <- llm."""
from __future__ import annotations

import ast

from core.paths import ROOT


def core_imports(module: str) -> set[str]:
    """core.* modules that `module` imports anywhere in its file (lazy imports inside functions too)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
            if node.module == "core":
                found |= {f"core.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("core.")}
    return {m for m in found if m != module}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in core_imports(todo.pop()):
            if dep not in seen and ((ROOT / (dep.replace(".", "/") + ".py")).exists()
                                    or (ROOT / dep.replace(".", "/")).is_dir()):
                seen.add(dep)
                todo.append(dep)
    return seen


def test_registry_and_model_locations_never_import_the_callers():
    for low in ("core.registry", "core.local_targets", "core.litellm_env", "core.local_decode", "core.threads"):
        assert not {"core.llm", "core.local_provider"} & reachable(low), low


def test_no_circle_between_llm_provider_and_registry():
    for module in ("core.llm", "core.local_provider", "core.registry"):
        assert module not in reachable(module), module
