"""The model catalog: defaults, successor chains, tools, and the demo-only mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.models.catalog import CATALOG_PATH, Catalog, UnknownModel, UnsupportedTools

SEED_IDS = {
    "gemini-2.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-3-pro-preview",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-1.5-pro",
    "gemini-1.5-pro-latest",
    "gemini-1.5-flash",
    "gemini-1.5-flash-latest",
}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.load(gemini_enabled=True)


def test_default_with_gemini(catalog: Catalog) -> None:
    assert catalog.default_id == "gemini-2.5-flash-lite"
    assert catalog.gemini_enabled
    model = catalog.resolve(None)
    assert model.id == "gemini-2.5-flash-lite"
    assert model.provider == "gemini"
    assert model.input_token_limit == 1_048_576
    assert model.tools == {"google_search", "url_context", "code_execution"}


def test_every_seed_and_current_model_is_listed(catalog: Catalog) -> None:
    ids = {m["id"] for m in catalog.public_list()}
    assert ids >= SEED_IDS
    assert {"gemini-3.1-pro-preview", "gemini-3.5-flash", "gemini-3.5-flash-lite"} <= ids
    assert {"gemini-3.8-flash", "demo"} <= ids


def test_shut_down_model_resolves_to_its_successor(catalog: Catalog) -> None:
    assert catalog.resolve("gemini-3-pro-preview").id == "gemini-3.1-pro-preview"
    # A chain: the -latest alias → 1.5 Flash (shut down) → an answering model.
    answered = catalog.resolve("gemini-1.5-flash-latest")
    assert answered.status in {"available", "preview", "deprecated"}
    assert answered.id == "gemini-3.5-flash"


def test_deprecated_model_still_answers_itself(catalog: Catalog) -> None:
    model = catalog.resolve("gemini-2.5-pro")
    assert model.id == "gemini-2.5-pro"
    assert model.status == "deprecated"
    assert model.successor == "gemini-3.1-pro-preview"


def test_every_id_resolves_to_an_answering_model(catalog: Catalog) -> None:
    for item in catalog.public_list():
        model = catalog.resolve(str(item["id"]))
        assert model.status != "shut_down"


def test_unknown_model(catalog: Catalog) -> None:
    with pytest.raises(UnknownModel, match="unknown model 'gpt-5'"):
        catalog.resolve("gpt-5")


def test_models_prefix_is_accepted(catalog: Catalog) -> None:
    assert catalog.resolve("models/gemini-3.5-flash").id == "gemini-3.5-flash"


def test_tools_are_checked_and_deduplicated(catalog: Catalog) -> None:
    model = catalog.resolve("gemini-2.5-flash-lite")
    assert catalog.check_tools(model, ["code_execution", "google_search", "code_execution"]) == (
        "code_execution",
        "google_search",
    )
    assert catalog.check_tools(model, []) == ()


def test_tools_refused(catalog: Catalog) -> None:
    demo = catalog.resolve("demo")
    with pytest.raises(UnsupportedTools) as info:
        catalog.check_tools(demo, ["google_search", "url_context", "google_search"])
    assert info.value.model == "demo"
    assert info.value.tools == ("google_search", "url_context")
    with pytest.raises(UnsupportedTools):
        catalog.check_tools(catalog.resolve(None), ["teleport"])


def test_public_list_shape(catalog: Catalog) -> None:
    listed = catalog.public_list()
    defaults = [m["id"] for m in listed if m["default"]]
    assert defaults == ["gemini-2.5-flash-lite"]
    for item in listed:
        assert {"id", "name", "description", "default", "tools", "status"} <= item.keys()
        assert item["status"] in {"available", "deprecated", "shut_down", "preview"}
        assert isinstance(item["inputTokenLimit"], int)
    shut = next(m for m in listed if m["id"] == "gemini-3-pro-preview")
    assert shut["status"] == "shut_down"
    assert shut["successor"] == "gemini-3.1-pro-preview"
    assert "successor" not in next(m for m in listed if m["id"] == "gemini-3.5-flash")


def test_without_key_only_demo_is_offered() -> None:
    catalog = Catalog.load(gemini_enabled=False)
    assert catalog.default_id == "demo"
    assert not catalog.gemini_enabled
    assert catalog.resolve(None).id == "demo"
    assert catalog.resolve(None).provider == "demo"
    listed = catalog.public_list()
    assert [m["id"] for m in listed] == ["demo"]
    assert listed[0]["default"] is True
    assert listed[0]["tools"] == []
    with pytest.raises(UnknownModel, match="no API key is configured"):
        catalog.resolve("gemini-2.5-flash-lite")
    with pytest.raises(UnknownModel, match="unknown model"):
        catalog.resolve("nonsense")


def test_demo_is_listed_with_gemini(catalog: Catalog) -> None:
    demo = next(m for m in catalog.public_list() if m["id"] == "demo")
    assert demo["default"] is False
    assert catalog.resolve("demo").input_token_limit == 32768


def test_broken_chain_is_rejected(tmp_path: Path) -> None:
    data = json.loads(CATALOG_PATH.read_text())
    for entry in data["models"]:
        if entry["id"] == "gemini-3-pro-preview":
            entry["successor"] = "gemini-9-ultra"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="successor"):
        Catalog.load(gemini_enabled=True, path=path)
