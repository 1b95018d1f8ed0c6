"""Import: an export file (:mod:`server.storage.export_schema`) checked whole, then written
under the importing user with new ids, in one transaction.

:func:`check` refuses a file with the first problem it finds, named by its path
(``conversations[3].messages[7].parentId: unknown message``): a U+0000 in a field, a
field of the wrong shape, a duplicate message id, a ``parentId`` naming no message of
the conversation, a cycle of parents, an answer that does not follow a user message (or a
user message that follows another), an ``activeLeafId`` naming no message; an
attachment on an answer, named twice by one message, without its ``data`` the first time
its conversation names it, or whose ``data`` is not base64 of ``size`` bytes. Too many
conversations or messages, or an attachment over ``CERO_ATTACHMENT_MAX_BYTES``, is
:class:`ImportTooLarge`. Nothing is written before the whole file passed.
(:mod:`server.storage.import_attachments` then checks the user's quota and stores the
files, checking each against its ``sha256``.)

:func:`plan` mints the new ids (``parentId`` and ``activeLeafId`` remapped), keeps the
file's times (a message's time is kept to the millisecond and the file's order breaks
ties, so sibling order and "newest" stay as exported), stores a ``streaming`` answer
as ``interrupted`` (no generation runs for it here) and links each user message to its
attachments (new rows, over the files already stored). :func:`write_import` inserts every
row in one write transaction (``BEGIN IMMEDIATE`` on SQLite, so it queues on the write
lock like every other write outside the batch writer): a failure leaves nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from actors.clock import parse_iso
from server.core.ids import new_id
from server.storage.conversation_titles import KEPT
from server.storage.db import write_transaction
from server.storage.export_schema import (
    CONVERSATION_KEYS,
    FILE_KEYS,
    MESSAGE_KEYS,
    ExportAttachment,
    ExportConversation,
    ExportFile,
)
from server.storage.tables import Attachment, Conversation, Message, MessageAttachment

T = TypeVar("T")

#: Rows per ``INSERT`` (Message has 17 columns: 8,500 parameters, within both engines').
CONVERSATIONS_PER_INSERT = 200
MESSAGES_PER_INSERT = 500
#: An answer's fields whose value is free-form JSON (must serialise again: orjson's depth).
_FREE_FORM = ("usage", "citations", "tools")


class InvalidImport(Exception):
    """The file's first problem: ``path`` names where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ImportTooLarge(Exception):
    """Past a limit (``413``): ``code`` ``payload_too_large`` or ``quota_exceeded``,
    ``limit`` the number (for the answer's ``"limit"``), when it is one."""

    def __init__(
        self, path: str, problem: str, code: str = "payload_too_large", limit: int | None = None
    ) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.code = code
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ImportLimits:
    conversations: int
    messages: int
    #: One attachment's bytes (``CERO_ATTACHMENT_MAX_BYTES``).
    attachment_bytes: int = 20 << 20


@dataclass(frozen=True, slots=True)
class NewFile:
    """An attachment whose bytes the file carries (the first time its conversation
    names it): where it is in the file, and the stored file's key in :func:`plan`."""

    path: str
    conversation: int
    attachment: ExportAttachment


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An attachment's bytes, stored: what its row records."""

    sha256: str
    size: int
    mime_type: str
    name: str


@dataclass(frozen=True, slots=True)
class Imported:
    id: str
    short_title: str
    imported_from: str


@dataclass(slots=True)
class Plan:
    conversations: list[Conversation]
    messages: list[Message]
    imported: list[Imported]
    attachments: list[Attachment] = dataclasses.field(default_factory=list)
    links: list[MessageAttachment] = dataclasses.field(default_factory=list)


# -- checking ------------------------------------------------------------------------------


def check(data: object, limits: ImportLimits) -> ExportFile:
    """The file, validated whole; :class:`InvalidImport` or :class:`ImportTooLarge`."""
    if not isinstance(data, dict):
        raise InvalidImport("body", "must be a JSON object")
    nul = _first_nul(data)
    if nul is not None:
        raise InvalidImport(nul, "must not contain NUL characters")
    _check_counts(data, limits)
    try:
        export = ExportFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidImport(_path(first.get("loc", ())), message) from None
    for index, conversation in enumerate(export.conversations):
        _check_tree(f"conversations[{index}]", conversation)
        _check_attachments(f"conversations[{index}]", conversation, limits)
    return export


def base64_size(data: str) -> int | None:
    """How many bytes standard base64 ``data`` decodes to (``None``: not base64 by its
    length or padding; the characters are checked as it is decoded)."""
    if len(data) % 4:
        return None
    padding = len(data) - len(data.rstrip("="))
    if padding > 2 or "=" in data[: len(data) - padding]:
        return None
    return len(data) // 4 * 3 - padding


def _check_attachments(path: str, conversation: ExportConversation, limits: ImportLimits) -> None:
    seen: set[str] = set()
    for j, message in enumerate(conversation.messages):
        if not message.attachments:
            continue
        where = f"{path}.messages[{j}].attachments"
        if message.role != "user":
            raise InvalidImport(where, "only a user message has attachments")
        in_message: set[str] = set()
        for k, attachment in enumerate(message.attachments):
            here = f"{where}[{k}]"
            if attachment.id in in_message:
                raise InvalidImport(f"{here}.id", "the message names this attachment twice")
            in_message.add(attachment.id)
            if attachment.id in seen:
                continue  # its bytes came with the first message that named it
            seen.add(attachment.id)
            if attachment.data is None:
                raise InvalidImport(
                    f"{here}.data",
                    "missing (the first time a conversation names an attachment, "
                    "it carries its bytes)",
                )
            decoded = base64_size(attachment.data)
            if decoded is None:
                raise InvalidImport(f"{here}.data", "not valid base64")
            if decoded != attachment.size:
                raise InvalidImport(f"{here}.size", f"does not match the data ({decoded} bytes)")
            if attachment.size > limits.attachment_bytes:
                raise ImportTooLarge(
                    f"{here}.size",
                    f"larger than {limits.attachment_bytes} bytes (CERO_ATTACHMENT_MAX_BYTES)",
                    limit=limits.attachment_bytes,
                )


def new_files(export: ExportFile) -> list[NewFile]:
    """The attachments whose bytes the (checked) file carries, in the file's order."""
    out: list[NewFile] = []
    for i, conversation in enumerate(export.conversations):
        seen: set[str] = set()
        for j, message in enumerate(conversation.messages):
            for k, attachment in enumerate(message.attachments or ()):
                if attachment.id not in seen:
                    seen.add(attachment.id)
                    path = f"conversations[{i}].messages[{j}].attachments[{k}]"
                    out.append(NewFile(path, i, attachment))
    return out


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _check_counts(data: dict[str, Any], limits: ImportLimits) -> None:
    conversations = data.get("conversations")
    if not isinstance(conversations, list):
        return
    if len(conversations) > limits.conversations:
        raise ImportTooLarge(
            "conversations", f"more than {limits.conversations} conversations in one import"
        )
    total = 0
    for conversation in conversations:
        messages = conversation.get("messages") if isinstance(conversation, dict) else None
        total += len(messages) if isinstance(messages, list) else 0
    if total > limits.messages:
        raise ImportTooLarge("conversations", f"more than {limits.messages} messages in one import")


def _first_nul(data: dict[str, Any]) -> str | None:
    """The path of the first field the import reads that holds U+0000, in file order."""
    for key, value in data.items():
        if key not in FILE_KEYS:
            continue
        if key != "conversations" or not isinstance(value, list):
            found = _nul_in(value, key)
        else:
            found = _nul_in_conversations(value)
        if found is not None:
            return found
    return None


def _nul_in_conversations(conversations: list[Any]) -> str | None:
    for i, conversation in enumerate(conversations):
        if not isinstance(conversation, dict):
            continue
        for key, value in conversation.items():
            if key not in CONVERSATION_KEYS:
                continue
            path = f"conversations[{i}].{key}"
            if key != "messages" or not isinstance(value, list):
                found = _nul_in(value, path)
                if found is not None:
                    return found
                continue
            for j, message in enumerate(value):
                if not isinstance(message, dict):
                    continue
                for field, item in message.items():
                    if field in MESSAGE_KEYS:
                        found = _nul_in(item, f"{path}[{j}].{field}")
                        if found is not None:
                            return found
    return None


def _nul_in(value: object, path: str) -> str | None:
    """Any string (value or key) under ``value``; iterative, so depth costs no recursion."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                if "\x00" in key:
                    return where
                stack.append((f"{where}.{key}", inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{k}]", inner) for k, inner in reversed(list(enumerate(item))))
    return None


def _check_tree(path: str, conversation: ExportConversation) -> None:
    messages = conversation.messages
    index: dict[str, int] = {}
    for j, message in enumerate(messages):
        if message.id in index:
            raise InvalidImport(f"{path}.messages[{j}].id", "duplicate id")
        index[message.id] = j
    for j, message in enumerate(messages):
        if message.parentId is not None and message.parentId not in index:
            raise InvalidImport(f"{path}.messages[{j}].parentId", "unknown message")
    # Cycles: walk up from each message; a walk that meets itself is a cycle. Messages
    # already known to reach a root end a walk early, so the whole check is linear.
    rooted: set[str] = set()
    for j, message in enumerate(messages):
        walk: list[str] = []
        on_walk: set[str] = set()
        current: str | None = message.id
        while current is not None and current not in rooted:
            if current in on_walk:
                raise InvalidImport(f"{path}.messages[{j}].parentId", "a cycle of parents")
            on_walk.add(current)
            walk.append(current)
            current = messages[index[current]].parentId
        rooted.update(walk)
    for j, message in enumerate(messages):
        parent = None if message.parentId is None else messages[index[message.parentId]]
        if message.role == "assistant" and (parent is None or parent.role != "user"):
            raise InvalidImport(
                f"{path}.messages[{j}].parentId", "an answer must follow a user message"
            )
        if message.role == "user" and parent is not None and parent.role != "assistant":
            raise InvalidImport(
                f"{path}.messages[{j}].parentId",
                "a user message must start the conversation or follow an answer",
            )
    leaf = conversation.activeLeafId
    if leaf is not None and leaf not in index:
        raise InvalidImport(f"{path}.activeLeafId", "unknown message")
    for j, message in enumerate(messages):
        for key in _FREE_FORM:
            try:
                orjson.dumps(getattr(message, key))
            except orjson.JSONEncodeError:
                raise InvalidImport(f"{path}.messages[{j}].{key}", "nested too deeply") from None


# -- planning and writing --------------------------------------------------------------------


def plan(
    export: ExportFile,
    user_id: str,
    now: datetime,
    stored: Mapping[tuple[int, str], StoredFile] | None = None,
) -> Plan:
    """The rows to insert for ``export`` under ``user_id``, every id new; ``stored``:
    the attachments' files, by (conversation's index, attachment's id in the file)."""
    stored = stored or {}
    out = Plan([], [], [])
    for index, conversation in enumerate(export.conversations):
        conversation_id = new_id()
        ids = {m.id: new_id() for m in conversation.messages}
        title = " ".join(conversation.shortTitle.split())
        leaf = conversation.activeLeafId
        out.conversations.append(
            Conversation(
                id=conversation_id,
                user_id=user_id,
                short_title=title,
                title_source=KEPT,  # an imported title is never regenerated
                active_leaf_id=None if leaf is None else ids[leaf],
                created_at=parse_iso(conversation.createdAt),
                updated_at=parse_iso(conversation.updatedAt),
            )
        )
        for message, created in _ordered_times(conversation):
            answer = message.role == "assistant"
            out.messages.append(
                Message(
                    id=ids[message.id],
                    conversation_id=conversation_id,
                    role=message.role,
                    content=message.content,
                    status="interrupted" if message.status == "streaming" else message.status,
                    model=message.aiModel if answer else None,
                    finish_reason=message.finishReason if answer else None,
                    usage=message.usage if answer else None,
                    citations=message.citations if answer else None,
                    tools=message.tools if answer else None,
                    parent_id=None if message.parentId is None else ids[message.parentId],
                    created_at=created,
                    updated_at=now,
                )
            )
        _plan_attachments(out, index, conversation, ids, conversation_id, user_id, now, stored)
        out.imported.append(Imported(conversation_id, title, conversation.id))
    return out


def _plan_attachments(
    out: Plan,
    index: int,
    conversation: ExportConversation,
    ids: Mapping[str, str],
    conversation_id: str,
    user_id: str,
    now: datetime,
    stored: Mapping[tuple[int, str], StoredFile],
) -> None:
    """A new attachment row per attachment of the conversation (its first message
    names it), and a link per message that names it, in order."""
    new_ids: dict[str, str] = {}
    for message in conversation.messages:
        if message.role != "user":
            continue
        for position, attachment in enumerate(message.attachments or ()):
            attachment_id = new_ids.get(attachment.id)
            if attachment_id is None:
                file = stored[(index, attachment.id)]
                attachment_id = new_ids[attachment.id] = new_id()
                out.attachments.append(
                    Attachment(
                        id=attachment_id,
                        created_at=now,
                        user_id=user_id,
                        conversation_id=conversation_id,
                        name=file.name,
                        mime_type=file.mime_type,
                        size=file.size,
                        sha256=file.sha256,
                    )
                )
            out.links.append(
                MessageAttachment(
                    id=new_id(),
                    created_at=now,
                    message_id=ids[message.id],
                    attachment_id=attachment_id,
                    position=position,
                )
            )


def _ordered_times(conversation: ExportConversation) -> list[tuple[Any, datetime]]:
    """The messages by time, the file's order breaking ties, each time made strictly
    later than the one before by whole microseconds: messages are read back ordered by
    time, and the file's times have only milliseconds (a user message and its answer
    usually share one)."""
    timed = sorted(
        ((parse_iso(m.createdAt), j, m) for j, m in enumerate(conversation.messages)),
        key=lambda item: (item[0], item[1]),
    )
    out: list[tuple[Any, datetime]] = []
    last: datetime | None = None
    for created, _, message in timed:
        if last is not None and created <= last:
            created = last + timedelta(microseconds=1)
        out.append((message, created))
        last = created
    return out


def _chunks(rows: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def write_import(planned: Plan) -> None:
    """Every row of ``planned`` in one transaction: all of it, or nothing."""
    if not planned.conversations:
        return
    async with write_transaction(Conversation._meta.db):
        for conversations in _chunks(planned.conversations, CONVERSATIONS_PER_INSERT):
            await Conversation.insert(*conversations).run()
        for messages in _chunks(planned.messages, MESSAGES_PER_INSERT):
            await Message.insert(*messages).run()
        for attachments in _chunks(planned.attachments, MESSAGES_PER_INSERT):
            await Attachment.insert(*attachments).run()
        for links in _chunks(planned.links, MESSAGES_PER_INSERT):
            await MessageAttachment.insert(*links).run()
