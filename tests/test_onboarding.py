"""Onboarding a client: `python -m core.dataset new` scaffolds folders that work as written."""
from __future__ import annotations

import typing

import pytest
import yaml

from core import dataset as data
from tests.client_folders import client_root


@pytest.fixture
def root(tmp_path):
    with client_root(tmp_path) as folders:
        yield folders


@pytest.mark.parametrize("language", ["en", "zh"])
def test_new_client_scaffold_loads_labels_and_validates(root, language, capsys, monkeypatch):
    from core.eval import suite as suites
    from core.eval.suite import Category, load_suite

    cdir, ddir = root
    monkeypatch.setattr(suites, "CUSTOMERS_DIR", cdir)  # the suite loader reads customers/<name>/ itself
    name = f"outfit_{language}"
    assert data.main(["new", name, "--language", language, "--title", "Outfit"]) == 0
    assert f"{name}/dataset.py" in capsys.readouterr().out
    customer = data.get_customer(name)
    assert customer.language == language and customer.title == "Outfit"
    for section in ("Quality (label in [0, 1])", "Human intervention", "Context:"):
        assert section in customer.rules
    ds = data.load_dataset(f"{name}/example")
    assert ds.errors == [] and len(ds) == 3
    assert ds[0].label > customer.threshold, "the resolved example is good"
    assert ds[1].human_intervention_idx == 0, "the complaint asks for a human at once"
    assert ds[2].label <= customer.threshold and ds[2].human_intervention_idx == -1
    suite = load_suite(customer=name)
    own = {s.category for s in suite.scenarios if s.id.startswith(f"{name}-")}
    assert own == set(typing.get_args(Category)) - {"regression"}, "one example per category"
    assert customer.handoff_message in (cdir / name / "prompt.md").read_text(encoding="utf-8")
    assert yaml.safe_load((cdir / name / "calibration.yaml").read_text()) == {"items": []}
    assert (ddir / name / "example.jsonl").exists()


def test_scaffold_refuses_bad_names_and_existing_clients(root, capsys):
    assert data.main(["new", "Outfit-EN", "--language", "en"]) == 2
    assert "lower-case letters, digits and _" in capsys.readouterr().err
    assert data.main(["new", "class", "--language", "en"]) == 2
    assert data.main(["new", "outfit", "--language", "en"]) == 0
    before = (root[0] / "outfit" / "dataset.py").read_text()
    assert data.main(["new", "outfit", "--language", "zh"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (root[0] / "outfit" / "dataset.py").read_text() == before, "nothing overwritten"


def test_factory_dataset_defaults_to_the_clients_first(root):
    from core.factory import JobConfig, open_dataset

    assert data.main(["new", "outfit", "--language", "en"]) == 0
    ds, info = open_dataset(JobConfig(customer="outfit"))
    assert info["key"] == "outfit/example" and len(ds) == 3


def test_validate_plays_a_new_clients_reference_replies(root, capsys, monkeypatch):
    from core import llm
    from core.eval import cli
    from core.eval import suite as suites

    cdir, _ = root
    monkeypatch.setattr(suites, "CUSTOMERS_DIR", cdir)
    monkeypatch.setattr(llm, "CUSTOMERS_DIR", cdir)  # the policy (prompt.md) grounds the references
    assert data.main(["new", "outfit_en", "--language", "en"]) == 0
    capsys.readouterr()
    assert cli.main(["validate", "--customer", "outfit_en"]) == 0
    assert "reference replies of" in capsys.readouterr().out

    path = cdir / "outfit_en" / "scenarios.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    scenario = next(s for s in doc["scenarios"] if s["category"] == "complaint")
    scenario["turns"][0]["reference"] = "Calm down. That is simply how it is."  # no handoff, dismissive
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert cli.main(["validate", "--customer", "outfit_en"]) == 1
    err = capsys.readouterr().err
    assert f"{scenario['id']} · turn 1 ·" in err
    assert cli.main(["validate", "--customer", "outfit_en", "--no-references"]) == 0
