"""The model catalog: which model ids a client may ask for, and who answers them.

The catalog is data (``catalog.json`` beside this module), not code, because Google
retires models every few months: a shut-down id keeps working by naming a
``successor``, and ``resolve`` follows that chain to the model that really answers.
Without a Gemini key only the offline ``demo`` model is offered, and it becomes the
default. In local mode (the embedded default: no ``BETTER_AUTH_SECRET``) a Gemini id is
answered by ``demo`` the same way (``offline_fallback``), so clients with hard-coded Gemini
ids, such as the original Cero CLI, can chat out of the box; with a secret set such an id
stays ``unknown_model``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import structlog

log = structlog.get_logger(__name__)

#: Tool names a chat request may ask for, in the order they are listed.
KNOWN_TOOLS: tuple[str, ...] = ("google_search", "url_context", "code_execution")
STATUSES: frozenset[str] = frozenset({"available", "deprecated", "shut_down", "preview"})
#: Statuses whose model still answers requests itself.
ANSWERING: frozenset[str] = frozenset({"available", "deprecated", "preview"})
PROVIDERS: frozenset[str] = frozenset({"gemini", "demo"})

CATALOG_PATH = Path(__file__).with_name("catalog.json")

Provider = Literal["gemini", "demo"]


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    description: str
    input_token_limit: int
    tools: frozenset[str]
    status: str
    successor: str | None
    provider: Provider


class UnknownModel(ValueError):
    """The requested model id is not offered (or needs a key that is not configured)."""

    def __init__(self, model_id: str, message: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class UnsupportedTools(ValueError):
    """The model does not support some of the requested tools."""

    def __init__(self, model: str, tools: tuple[str, ...]) -> None:
        super().__init__(f"model '{model}' does not support tool(s): {', '.join(tools)}")
        self.model = model
        self.tools = tools


def _parse_entry(raw: Mapping[str, object]) -> ModelInfo:
    def text(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"catalog entry {raw.get('id')!r}: {key} must be a non-empty string")
        return value

    limit = raw.get("inputTokenLimit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise ValueError(f"catalog entry {raw.get('id')!r}: inputTokenLimit must be > 0")
    tools = raw.get("tools")
    if not isinstance(tools, list) or not all(t in KNOWN_TOOLS for t in tools):
        raise ValueError(
            f"catalog entry {raw.get('id')!r}: tools must be a subset of {KNOWN_TOOLS}"
        )
    status = text("status")
    if status not in STATUSES:
        raise ValueError(f"catalog entry {raw.get('id')!r}: unknown status {status!r}")
    provider = text("provider")
    if provider not in PROVIDERS:
        raise ValueError(f"catalog entry {raw.get('id')!r}: unknown provider {provider!r}")
    successor = raw.get("successor")
    if successor is not None and not isinstance(successor, str):
        raise ValueError(f"catalog entry {raw.get('id')!r}: successor must be a string or null")
    return ModelInfo(
        id=text("id"),
        name=text("name"),
        description=text("description"),
        input_token_limit=limit,
        tools=frozenset(cast(list[str], tools)),
        status=status,
        successor=successor,
        provider=cast(Provider, provider),
    )


class Catalog:
    """The models this process offers. Build it once with :meth:`load`."""

    def __init__(
        self,
        models: Sequence[ModelInfo],
        *,
        default_id: str,
        gemini_enabled: bool,
        offline_fallback: bool = False,
    ) -> None:
        self._models: dict[str, ModelInfo] = {}
        for model in models:
            if model.id in self._models:
                raise ValueError(f"catalog: duplicate model id {model.id!r}")
            self._models[model.id] = model
        self.gemini_enabled = gemini_enabled
        #: Gemini ids are answered by ``demo`` (local mode without a key).
        self.offline_fallback = offline_fallback and not gemini_enabled
        self._fallbacks_logged: set[str] = set()
        self.default_id = default_id
        if "demo" not in self._models:
            raise ValueError("catalog: the demo model must be listed")
        for model in self._models.values():  # every id must lead to an answering model
            self._follow(model.id)
        if self._follow(default_id).id != default_id:
            raise ValueError(f"catalog: default {default_id!r} must answer itself")

    @classmethod
    def load(
        cls, *, gemini_enabled: bool, offline_fallback: bool = False, path: Path | None = None
    ) -> Catalog:
        """Read the catalog file; without Gemini only ``demo`` is offered (and default),
        and with ``offline_fallback`` it answers the Gemini ids too."""
        data = json.loads((path or CATALOG_PATH).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise ValueError("catalog: expected {'default': ..., 'models': [...]}")
        models = [_parse_entry(entry) for entry in data["models"]]
        default = data.get("default") if gemini_enabled else data.get("offline_default", "demo")
        if not isinstance(default, str):
            raise ValueError("catalog: default must be a model id")
        return cls(
            models,
            default_id=default,
            gemini_enabled=gemini_enabled,
            offline_fallback=offline_fallback,
        )

    def _follow(self, model_id: str) -> ModelInfo:
        seen: list[str] = []
        model = self._models.get(model_id)
        if model is None:
            raise UnknownModel(model_id, f"unknown model '{model_id}'")
        while model.status == "shut_down":
            seen.append(model.id)
            if model.successor is None or model.successor in seen:
                raise ValueError(
                    f"catalog: shut-down model chain {seen} has no answering successor"
                )
            nxt = self._models.get(model.successor)
            if nxt is None:
                raise ValueError(f"catalog: successor {model.successor!r} is not listed")
            model = nxt
        return model

    def _offered(self, model: ModelInfo) -> bool:
        return model.provider != "gemini" or self.gemini_enabled

    def get(self, model_id: str) -> ModelInfo | None:
        """The catalog entry itself (no successor resolution), or ``None``."""
        return self._models.get(model_id)

    def resolve(self, model_id: str | None) -> ModelInfo:
        """The model that actually answers ``model_id`` (``None`` → the default).

        Shut-down ids follow their successor chain, so ``.id`` of the result may differ
        from the id asked for. Raises :class:`UnknownModel`.
        """
        if model_id is None:
            model_id = self.default_id
        if model_id.startswith("models/"):
            model_id = model_id.removeprefix("models/")
        entry = self._models.get(model_id)
        if entry is None:
            raise UnknownModel(
                model_id, f"unknown model '{model_id}'; see GET /api/models for the list"
            )
        if not self._offered(entry):
            if self.offline_fallback:
                return self._fall_back(model_id)
            raise UnknownModel(
                model_id,
                f"model '{model_id}' is not available: no API key is configured for Gemini "
                "(set GOOGLE_GENERATIVE_AI_API_KEY); only 'demo' is offered",
            )
        return self._follow(model_id)

    def _fall_back(self, model_id: str) -> ModelInfo:
        """``demo`` answers ``model_id``; said in the log once per id and process."""
        if model_id not in self._fallbacks_logged:
            self._fallbacks_logged.add(model_id)
            log.warning(
                "model_fallback",
                requested=model_id,
                answered_by="demo",
                reason="local mode without a Gemini key (set GOOGLE_GENERATIVE_AI_API_KEY)",
            )
        return self._models["demo"]

    def fallbacks(self) -> dict[str, str]:
        """Ids answered by another model than their own in this process: ``{id: "demo"}``
        for every Gemini id under ``offline_fallback``, else empty."""
        if not self.offline_fallback:
            return {}
        return {m.id: "demo" for m in self._models.values() if not self._offered(m)}

    def check_tools(self, model: ModelInfo, tools: Sequence[str]) -> tuple[str, ...]:
        """The requested tools, de-duplicated in order; raises :class:`UnsupportedTools`."""
        wanted = tuple(dict.fromkeys(tools))
        refused = tuple(t for t in wanted if t not in model.tools)
        if refused:
            raise UnsupportedTools(model.id, refused)
        return wanted

    def public_list(self, *, shut_down: bool = True) -> list[dict[str, object]]:
        """The ``models`` array of ``GET /api/models`` (``demo`` is always listed); without
        ``shut_down`` the shut-down ids are left out (they still answer, through their
        ``successor``)."""
        out: list[dict[str, object]] = []
        for model in self._models.values():
            if not self._offered(model):
                continue
            if not shut_down and model.status == "shut_down":
                continue
            item: dict[str, object] = {
                "id": model.id,
                "name": model.name,
                "description": model.description,
                "default": model.id == self.default_id,
                "tools": [t for t in KNOWN_TOOLS if t in model.tools],
                "status": model.status,
                "inputTokenLimit": model.input_token_limit,
            }
            if model.successor is not None:
                item["successor"] = model.successor
            out.append(item)
        return out
