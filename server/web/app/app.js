// Cero web app: plain ES module, no build step. It speaks only the public API (REST +
// /api/ws) with the session cookie. Every text from the server is put in the DOM with
// textContent / createElement, never innerHTML, so an answer cannot run anything; an
// answer's Markdown is rendered by markdown.js (markdown-it with HTML off, vendored).
// The branch controls (regenerate, edit, continue, the version switcher) are drawn by
// branches.js; this module sends their commands and follows their events.
"use strict";

import { $, el } from "./dom.js";
import { describe, describeError } from "./failures.js";
import { revokeOthers, sessionGone, showSessions } from "./sessions.js";
import {
  actionBar, closeEditor, editorSending, openDraft, rememberFocus, restoreFocus, siblingsOf, startEdit,
  syncActions, wireActions,
} from "./branches.js";
import { forgetMarkdown, renderMarkdown } from "./markdown.js";
import {
  attachmentsEl, clearAttachments, failedUploads, readyAttachments, restoreAttachments, uploading, uploadsSettled,
  wireAttachments,
} from "./attachments.js";

const PAGE_SIZE = 20;
const MAX_BACKOFF_MS = 10000;
const HEARTBEAT_MS = 15000;
const HEARTBEAT_DEAD_MS = 35000;
const MAX_MESSAGE_CHARS = 32000; // the server's default; /api/models says the one in force
// Touch screens have no Shift+Enter to speak of: the placeholder does not mention it there.
const TOUCH = window.matchMedia("(pointer: coarse)").matches || navigator.maxTouchPoints > 0;

const state = {
  user: null,
  sessionId: null, // this page's session (a `session.revoked` naming it ends the page)
  maxChars: MAX_MESSAGE_CHARS,
  accountCursor: null, // {epoch, seq} of the last account-channel event applied
  deleting: null, // the conversation this page is deleting (its `conversation.deleted` is ours)
  gone: null, // the conversation last closed because it went away
  listLoads: 0, // counts the list's fetches: a refetch of page one that "Load more" overtook is dropped
  moreLoad: 0,
  prefs: { tools: [], aiModel: null }, // the user's preferences (docs/api.md, "Preferences")
  prefSaves: Promise.resolve(),
  models: [],
  convId: null, // the open conversation (null: a new chat)
  cursor: null, // {epoch, seq} of the last event applied for convId
  nextCursor: null, // conversation list pagination
  nextCursorUsed: false, // "Load more" was used: a refetch of page one would drop rows
  ws: null,
  wsReady: false,
  lastHeard: 0, // when the socket last received a frame
  asked: [], // types of the frames sent on this socket and not answered yet
  attempt: 0,
  reconnectTimer: null,
  // Frames not yet acknowledged, oldest first: {frame, el, inFlight, newChat, hooks}. Sends,
  // and the branch commands (regenerate, edit, continue, switch), which are re-sent after a
  // reconnect like a send (with the same clientMessageId) and answered in order.
  queue: [],
  texts: new Map(), // assistant messageId -> text so far
  streaming: null, // {messageId, generationId} of the answer streaming in convId
  stale: false, // a refetch failed: reload over REST at the next connection
  resetting: false, // refetching over REST (`reset`, `branch`); live events wait in `held`
  reloads: 0, // counts those refetches: only the latest one ends the wait
  held: [],
  renderQueued: new Set(),
  // Joining a streaming answer: messageId -> length of the REST text shown, which its
  // replay (from `init`, after the message's resumeCursor) replaces once it caught up.
  joining: new Map(),
  // The shown path could not be updated in place from the events (a message it does not
  // show): refetch it over REST when the generation running now ends.
  refetchAfter: false,
  editFocus: null, // the clientMessageId of an edit sent from this page, until it is shown
  sendAfterUploads: false, // Send was pressed while files upload: it sends when they end
};

// The frames that are queued until acknowledged, and the name of each in a refusal.
const COMMANDS = { send: "Send", regenerate: "Regenerate", edit: "Edit", continue: "Continue", switch: "Switching versions" };

// ---------- REST ----------

class ApiError extends Error {
  constructor(status, message, code, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const message = (data && (data.error_description || data.error)) || resp.statusText;
    if (resp.status === 401) showSignIn();
    throw new ApiError(resp.status, message, data && (data.code || data.error), data && data.field);
  }
  return data;
}

// ---------- small DOM helpers ----------

// The notice under the log: a sentence, and the buttons that may cure what it says
// (`actions`: [{label, run}]).
function notice(text, actions = []) {
  $("notice-text").textContent = text || "";
  $("notice-actions").replaceChildren(...actions.map(({ label, run }) => {
    const button = el("button", { type: "button", class: "ghost", text: label });
    button.addEventListener("click", () => {
      notice("");
      run();
    });
    return button;
  }));
  $("notice").hidden = !text;
}

// A failure in plain words, with its action: Retry (`retry()`, when given), choose another
// model, or shorten the message.
function fail(err, retry) {
  const { text, action } = err && err.text !== undefined ? err : describeError(err);
  notice(text, actionsFor(action, retry));
}

function actionsFor(action, retry) {
  if (action === "retry" && retry) return [{ label: "Retry", run: retry }];
  if (action === "model") return [{ label: "Choose another model", run: () => $("model").focus() }];
  if (action === "shorten") return [{ label: "Shorten the message", run: () => $("input").focus() }];
  return [];
}

// Said once to a screen reader (the polite #announce region), not token by token.
function announce(text) {
  const box = $("announce");
  box.textContent = "";
  // A new text node in a later task: the same sentence twice is still read out twice.
  setTimeout(() => {
    box.textContent = text.length > 1000 ? `${text.slice(0, 1000)}…` : text;
  }, 50);
}

function safeUrl(raw) {
  try {
    const url = new URL(raw, location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------- messages ----------

function messageEl(id) {
  return id ? $("messages").querySelector(`[data-id="${CSS.escape(id)}"]`) : null;
}

// Each message is a `.turn`: its <article> (what it says) and its action bar (branches.js).
// When a message was written, in the viewer's time zone (HH:MM; the date too when it is
// not today); the full time in the tooltip.
function timeEl(iso) {
  const when = iso ? new Date(iso) : new Date();
  if (Number.isNaN(when.getTime())) return el("span");
  const today = new Date().toDateString() === when.toDateString();
  const options = today
    ? { hour: "2-digit", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  const node = el("time", { class: "msg-time", datetime: when.toISOString(), text: when.toLocaleString([], options) });
  node.title = when.toLocaleString();
  return node;
}

function addMessage({ id, role, content, status, aiModel, clientMessageId, parentId, siblingIds, finishReason, createdAt, attachments }) {
  const node = el(
    "article",
    { class: `msg ${role}`, "aria-label": role === "user" ? "You" : "Cero" },
    el("div", { class: "who-line" }, el("span", { text: role === "user" ? "You" : "Cero" }), timeEl(createdAt)),
    el("div", { class: "tools-steps" }),
    el("div", { class: "body" }),
    Array.isArray(attachments) && attachments.length ? attachmentsEl(attachments) : null,
    el("div", { class: "sources" }),
    el("div", { class: "meta" }),
  );
  if (id) node.dataset.id = id;
  if (clientMessageId) node.dataset.client = clientMessageId;
  if (finishReason) node.dataset.finish = finishReason;
  setTree(node, parentId, siblingIds);
  const turn = el("div", { class: `turn ${role}` }, node, actionBar(role));
  $("messages").append(turn);
  if (role === "assistant") state.texts.set(id, content || "");
  setBody(node, content || "", role);
  setStatus(node, status, aiModel);
  turn.scrollIntoView({ block: "end" });
  return node;
}

function turnOf(node) {
  return node ? node.closest(".turn") : null;
}

// Where a message hangs in the conversation's tree (absent from servers without branches).
function setTree(node, parentId, siblingIds) {
  if (parentId !== undefined) node.dataset.parent = parentId === null ? "" : parentId;
  if (Array.isArray(siblingIds) && siblingIds.length) node.dataset.siblings = JSON.stringify(siblingIds);
}

// The last stored message shown (the active leaf), skipping own sends not stored yet.
function lastStored() {
  const stored = $("messages").querySelectorAll(":scope > .turn > article[data-id]");
  return stored.length ? stored[stored.length - 1] : null;
}

// A new branch replaces the path below `turn` (null: the whole path); sends of this page
// that are not stored yet stay.
function dropAfter(turn) {
  let next = turn ? turn.nextElementSibling : $("messages").firstElementChild;
  while (next) {
    const after = next.nextElementSibling;
    const id = next.querySelector("article").dataset.id;
    if (id) {
      state.texts.delete(id);
      state.joining.delete(id);
      next.remove();
    }
    next = after;
  }
}

// The controls ask the server for nothing while it answers, or while a frame of this
// conversation waits for its answer (the server would refuse with conversation_busy).
function isBusy() {
  if (state.streaming || !state.convId) return true;
  return state.queue.some((e) => !e.frame.conversationId || e.frame.conversationId === state.convId);
}

let syncQueued = false;
function syncControls() {
  if (syncQueued) return;
  syncQueued = true;
  queueMicrotask(() => {
    syncQueued = false;
    syncActions($("messages"), isBusy());
    syncComposer();
  });
}

// Send waits while an answer streams in the open conversation, or a send of it awaits its
// answer (the server would refuse it: conversation_busy), and while the text is too long;
// Stop is there meanwhile. Offline, whether the answer still runs is not known: a send is
// queued (the server refuses it, and the text comes back, if it still does).
function sendBlocked() {
  if (state.streaming && state.wsReady) return true;
  return state.queue.some((e) => e.el && (e.frame.conversationId || null) === state.convId);
}

function messageLength(text) {
  let n = 0;
  for (const _ of text) n += 1; // code points, as the server counts
  return n;
}

function syncComposer() {
  const length = messageLength($("input").value.trim());
  const over = length > state.maxChars;
  const count = $("count");
  count.hidden = length < state.maxChars * 0.8;
  count.classList.toggle("over", over);
  count.textContent = over
    ? `${length.toLocaleString()} / ${state.maxChars.toLocaleString()}: ${(length - state.maxChars).toLocaleString()} too many`
    : `${length.toLocaleString()} / ${state.maxChars.toLocaleString()}`;
  $("send").disabled = over || sendBlocked();
  $("send").textContent = state.sendAfterUploads ? "Sending…" : "Send";
}

// An answer is Markdown (markdown.js: only the blocks that changed are redrawn; `partial`
// while it streams); a message of yours is shown as typed.
function setBody(node, text, role, partial = false) {
  const body = node.querySelector(".body");
  if (role === "assistant") renderMarkdown(body, text, partial);
  else {
    forgetMarkdown(body);
    body.replaceChildren(el("p", { text }));
  }
}

function setStatus(node, status, aiModel) {
  node.dataset.status = status || "complete";
  const words = { streaming: "…", cancelled: "stopped", error: "failed", interrupted: "interrupted" };
  if (aiModel) node.dataset.model = aiModel;
  const parts = [];
  if (node.dataset.model) parts.push(node.dataset.model);
  if (words[status]) parts.push(words[status]);
  node.querySelector(".meta").textContent = parts.join(" · ");
  syncControls();
}

function renderText(messageId) {
  // One repaint per frame however many tokens arrived.
  if (state.renderQueued.has(messageId)) return;
  state.renderQueued.add(messageId);
  requestAnimationFrame(() => {
    state.renderQueued.delete(messageId);
    const node = messageEl(messageId);
    const shown = state.joining.get(messageId);
    if (shown !== undefined) {
      // The replay has not reached the REST text yet: keep that (a prefix of the same answer).
      if ((state.texts.get(messageId) || "").length < shown) return;
      state.joining.delete(messageId);
    }
    if (node) {
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      setBody(node, state.texts.get(messageId) || "", "assistant", true);
      node.dataset.text = state.texts.get(messageId) || "";
      if (atBottom) box.scrollTop = box.scrollHeight; // follow the answer unless scrolled up
    }
  });
}

function addToolStep(node, tool, payload) {
  const box = node.querySelector(".tools-steps");
  let item;
  if (tool === "google_search") {
    item = el("div", { class: "step" }, el("span", { class: "step-name", text: "Searched" }), " ",
      (payload.queries || []).join(" · "));
  } else if (tool === "url_context") {
    item = el("div", { class: "step" }, el("span", { class: "step-name", text: "Read" }), " ",
      (payload.urls || []).map((u) => u.url).join(" · "));
  } else if (tool === "code_execution") {
    item = el("details", { class: "step", open: "" },
      el("summary", { text: `Code (${(payload.language || "").toLowerCase()})` }),
      el("pre", {}, el("code", { text: payload.code || "" })));
  } else if (tool === "code_execution_result") {
    item = el("details", { class: "step", open: "" },
      el("summary", { text: `Output (${payload.outcome || ""})` }),
      el("pre", {}, el("code", { text: payload.output || "" })));
  } else {
    item = el("div", { class: "step", text: `${tool}: ${JSON.stringify(payload)}` });
  }
  box.append(item);
}

function setCitations(node, citations) {
  const box = node.querySelector(".sources");
  box.replaceChildren();
  const links = (citations || []).map((c) => ({ href: safeUrl(c.uri), title: c.title || c.uri }));
  const usable = links.filter((l) => l.href);
  if (!usable.length) return;
  box.append(el("span", { class: "step-name", text: "Sources" }));
  for (const link of usable) {
    box.append(" ", el("a", { href: link.href, rel: "noopener noreferrer", target: "_blank", text: link.title }));
  }
}

function setStreaming(value) {
  state.streaming = value;
  $("stop").hidden = !value;
  $("stop").disabled = false;
  syncControls();
}

function renderStored(message) {
  const node = addMessage(message);
  if (message.role !== "assistant") return;
  node.dataset.text = message.content || "";
  for (const step of message.tools || []) addToolStep(node, step.tool, step.payload || {});
  setCitations(node, message.citations);
  if (message.status === "error") showFailure(node, {});
  if (message.status === "streaming") setStreaming({ messageId: message.id, generationId: null });
}

function parseCursor(text) {
  const at = text.lastIndexOf(":");
  const seq = Number(text.slice(at + 1));
  return at > 0 && Number.isInteger(seq) ? { epoch: text.slice(0, at), seq } : null;
}

// Messages over REST; returns where to subscribe from to replay a streaming answer whole
// (its `resumeCursor`: the event before its `init`), or null.
async function loadMessages(id) {
  const data = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages`);
  if (state.convId !== id) return null;
  $("messages").replaceChildren();
  state.texts.clear();
  state.joining.clear();
  setStreaming(null);
  setTitle(data.conversation.shortTitle);
  let resume = null;
  for (const message of data.messages) {
    renderStored(message);
    const cursor = message.status === "streaming" && message.resumeCursor ? parseCursor(message.resumeCursor) : null;
    if (cursor) {
      resume = cursor;
      state.joining.set(message.id, (message.content || "").length);
    }
  }
  for (const { frame, el: node } of state.queue) {
    if (frame.conversationId === id && node) $("messages").append(turnOf(node));
  }
  syncControls();
  return resume;
}

// Refetch the active path over REST, live events held meanwhile and applied after (a
// `branch` event, or a path the events could not update in place). Called only when no
// generation runs: an answer streaming in the refetched path started after this point, so
// its `init` is among the held or later events and replays it whole (as when joining).
async function refetchPath() {
  const id = state.convId;
  if (!id) return;
  const box = $("messages");
  const focus = rememberFocus(box);
  const draft = openDraft(box);
  const reload = ++state.reloads;
  state.resetting = true;
  state.held = [];
  try {
    await loadMessages(id);
  } catch {
    if (reload !== state.reloads) return;
    state.resetting = false;
    state.held = [];
    state.stale = true;
    dropSocket();
    return;
  }
  if (state.convId !== id || reload !== state.reloads) return; // a later refetch took over
  for (const node of box.querySelectorAll('article.assistant[data-status="streaming"]')) {
    if (!state.joining.has(node.dataset.id)) state.joining.set(node.dataset.id, (state.texts.get(node.dataset.id) || "").length);
  }
  state.resetting = false;
  syncActions(box, isBusy());
  if (draft && messageEl(draft.id)) startEdit(messageEl(draft.id), draft.text);
  else restoreFocus(box, focus);
  applyHeld(null);
}

// Apply the events held during a refetch, in order; `skip(ev)`: pass over it (its cursor
// counts). One of them may start another refetch: the rest are held for that one.
function applyHeld(skip) {
  const held = state.held;
  state.held = [];
  for (const ev of held) {
    if (state.resetting) state.held.push(ev);
    else if (skip && skip(ev)) state.cursor = { epoch: ev.epoch, seq: ev.seq };
    else applyEvent(ev);
  }
}

// ---------- live events ----------

function applyEvent(ev) {
  const cursor = state.cursor;
  if (cursor && cursor.epoch === ev.epoch && ev.seq <= cursor.seq) return; // already applied
  state.cursor = { epoch: ev.epoch, seq: ev.seq };
  switch (ev.type) {
    case "message": {
      const m = ev.message;
      if (messageEl(m.id)) break;
      // The event can come before the ack: match our own bubble by its clientMessageId.
      const key = m.clientMessageId || ev.clientMessageId;
      const mine = key ? $("messages").querySelector(`[data-client="${CSS.escape(key)}"]`) : null;
      if (mine) {
        mine.dataset.id = m.id;
        setTree(mine, m.parentId, [m.id]);
        setStatus(mine, "complete");
      } else {
        addUserMessage(m);
        announce(`You wrote, on another device: ${m.content || ""}`);
      }
      touchConversation(ev.conversationId);
      break;
    }
    case "init": {
      const joined = messageEl(ev.messageId);
      if (joined) {
        if (state.joining.has(ev.messageId) || ev.action === "continue") {
          // The replay of an answer shown over REST, or a stored answer continued (whose
          // first token carries its whole text so far): its text starts again from here,
          // and the text shown stays until the new one has caught up with it.
          if (!state.joining.has(ev.messageId)) state.joining.set(ev.messageId, (state.texts.get(ev.messageId) || "").length);
          state.texts.set(ev.messageId, "");
          if (ev.action !== "continue") joined.querySelector(".tools-steps").replaceChildren();
        }
        if (ev.action === "continue") {
          delete joined.dataset.finish;
          setStatus(joined, "streaming", ev.aiModel);
        }
      } else addAnswer(ev);
      setStreaming({ messageId: ev.messageId, generationId: ev.generationId });
      break;
    }
    case "branch":
      // Another version was chosen (here or on another device): show the new active path.
      if (!lastStored() || lastStored().dataset.id !== ev.activeLeafId) refetchPath();
      break;
    case "token": {
      if (!messageEl(ev.messageId)) {
        addMessage({ id: ev.messageId, role: "assistant", content: "", status: "streaming" });
      }
      state.texts.set(ev.messageId, (state.texts.get(ev.messageId) || "") + ev.text);
      renderText(ev.messageId);
      if (!state.streaming) setStreaming({ messageId: ev.messageId, generationId: null });
      break;
    }
    case "tool": {
      const node = messageEl(ev.messageId);
      if (node) addToolStep(node, ev.tool, ev.payload || {});
      break;
    }
    case "done":
    case "cancelled":
    case "error":
      finish(ev);
      announceEnd(ev);
      break;
    case "presence":
      showPresence(ev.viewers);
      break;
    default:
      break;
  }
}

// A user message from an event: the next one on the path, or (an edit) a new version of
// one shown, which replaces the path below its parent.
function addUserMessage(m) {
  const last = lastStored();
  if (m.parentId === undefined || m.parentId === (last ? last.dataset.id : null)) {
    addMessage({ ...m, siblingIds: [m.id] });
    return;
  }
  const parent = m.parentId === null ? null : messageEl(m.parentId);
  if (m.parentId !== null && !parent) {
    state.refetchAfter = true; // hangs from a message not shown: show it, refetch later
    addMessage(m);
    return;
  }
  const below = parent ? turnOf(parent).nextElementSibling : $("messages").firstElementChild;
  const old = below ? below.querySelector("article.user[data-id]") : null;
  const ids = old ? siblingsOf(old).ids.filter((id) => id !== m.id) : [];
  dropAfter(turnOf(parent));
  addMessage({ ...m, siblingIds: [...ids, m.id] });
  if (m.clientMessageId && m.clientMessageId === state.editFocus) focusNewVersion(m.id);
}

// A new answer (`init`): after its user message; a regenerated one replaces the answer
// shown there and becomes its newest version.
function addAnswer(ev) {
  const answer = { id: ev.messageId, role: "assistant", content: "", status: "streaming", aiModel: ev.aiModel };
  const user = messageEl(ev.userMessageId);
  if (user && ev.action === "regenerate") {
    const next = turnOf(user).nextElementSibling;
    const old = next ? next.querySelector("article.assistant[data-id]") : null;
    if (!old) state.refetchAfter = true; // its other versions are not shown: refetch later
    const ids = old ? siblingsOf(old).ids.filter((id) => id !== ev.messageId) : [];
    dropAfter(turnOf(user));
    addMessage({ ...answer, parentId: ev.userMessageId, siblingIds: [...ids, ev.messageId] });
    return;
  }
  if (ev.userMessageId && (!user || lastStored() !== user)) state.refetchAfter = true;
  addMessage({ ...answer, parentId: ev.userMessageId, siblingIds: [ev.messageId] });
}

function finish(ev) {
  state.joining.delete(ev.messageId);
  let node = messageEl(ev.messageId);
  if (!node && ev.messageId) {
    node = addMessage({ id: ev.messageId, role: "assistant", content: "", status: "streaming" });
  }
  if (node) {
    if (ev.type === "done") state.texts.set(ev.messageId, ev.fullText);
    if (ev.type === "cancelled" && typeof ev.fullText === "string") state.texts.set(ev.messageId, ev.fullText);
    const text = state.texts.get(ev.messageId) || "";
    setBody(node, text, "assistant");
    node.dataset.text = text;
    if (ev.type === "done" && ev.finishReason) node.dataset.finish = ev.finishReason;
    const status = { done: "complete", cancelled: "cancelled", error: "error" }[ev.type];
    setStatus(node, status);
    if (ev.type === "done") setCitations(node, ev.citations);
    if (ev.type === "error") showFailure(node, ev);
  }
  setStreaming(null);
  if (state.refetchAfter) {
    state.refetchAfter = false;
    refetchPath();
  }
}

// A failed answer says why in plain words, with what may cure it: Retry (a new version of
// the answer) or choosing another model.
function showFailure(node, ev) {
  // A stored failure (over REST) has no code: say so, and offer a new version.
  const { text, action } = ev.code ? describe(ev.code, { error: ev.error }) : { text: "This answer failed.", action: "retry" };
  const box = node.querySelector(".sources");
  box.replaceChildren(el("span", { class: "failure", text }));
  const id = node.dataset.id;
  const run = action === "retry" || action === "model" ? () => {
    if (action === "model") $("model").focus();
    else if (id && !isBusy()) branchCommands.regenerate(id);
  } : null;
  if (run && id) {
    box.append(" ", el("button", { type: "button", class: "ghost inline-action", "data-retry": id,
      text: action === "model" ? "Choose another model" : "Retry" }));
    box.lastChild.addEventListener("click", run);
  }
}

function announceEnd(ev) {
  if (ev.type === "done") announce(`Cero answered: ${ev.fullText || ""}`);
  else if (ev.type === "cancelled") announce("The answer was stopped.");
  else announce(`The answer failed. ${describe(ev.code, { error: ev.error }).text}`);
}

// "2 devices watching": only when another device watches too (alone, it says nothing).
function showPresence(viewers) {
  const box = $("presence");
  box.hidden = !(viewers > 1);
  box.textContent = `${viewers} devices watching`;
}

function onFrame(frame) {
  if (frame.type === "ack") return onAck(frame);
  if (frame.type === "fault") return onFault(frame);
  if (frame.type === "subscribed") answered("subscribe");
  if (frame.channel === "account") return onAccount(frame);
  if (frame.conversationId && frame.conversationId !== state.convId) return;
  if (frame.type === "subscribed") {
    // Subscribed without a cursor: live from here. With one: its replay (or `reset`) follows.
    if (!state.cursor) state.cursor = { epoch: frame.epoch, seq: frame.seq };
    return;
  }
  if (frame.type === "unsubscribed") {
    // The server ended this subscription (its actor stopped, or the conversation was
    // deleted): follow on from the cursor; a deleted one answers `not_found`.
    const id = state.convId;
    setTimeout(() => {
      if (state.convId === id && state.wsReady) subscribe(id);
    }, 250);
    return;
  }
  if (frame.type === "reset") return onReset(frame);
  if (state.resetting) state.held.push(frame);
  else applyEvent(frame);
}

async function onReset(frame) {
  // The cursor cannot be replayed: refetch over REST, then go on live from frame.seq + 1.
  state.cursor = { epoch: frame.epoch, seq: frame.seq };
  const reload = ++state.reloads;
  state.resetting = true;
  state.held = [];
  try {
    await loadMessages(state.convId);
  } catch {
    if (reload !== state.reloads) return;
    // Not refetched (the network went again): start over at the next connection.
    state.resetting = false;
    state.held = [];
    state.stale = true;
    dropSocket();
    return;
  }
  if (reload !== state.reloads) return; // a later refetch took over
  state.resetting = false;
  // Text streamed before the refetch is in the REST snapshot already: skip tokens of an
  // answer that was streaming (its `done` carries the whole text).
  applyHeld((ev) => ev.type === "token" && state.texts.has(ev.messageId));
}

// The server answers every frame, in order: `subscribed` or `ack` (naming what it answers)
// or `fault` (naming nothing). `state.asked` lists the frames sent on this socket that are
// not answered yet, so that a fault can be pinned on the frame that caused it.
function answered(type) {
  if (!type) return state.asked.shift();
  const at = state.asked.indexOf(type);
  if (at >= 0) state.asked.splice(0, at + 1); // anything before it went unanswered
  return type;
}

function onAck(frame) {
  answered(frame.of);
  if (!COMMANDS[frame.of]) return;
  const entry = state.queue.find((e) => e.inFlight && e.frame.type === frame.of);
  if (!entry) return;
  state.queue.splice(state.queue.indexOf(entry), 1);
  syncControls();
  if (frame.of !== "send") {
    // A branch command was taken; its events (or, for a switch, `branch`) show the result.
    if (entry.hooks && entry.hooks.ack) entry.hooks.ack(frame);
    flushQueue();
    return;
  }
  const fresh = !entry.frame.conversationId;
  if (entry.el) {
    entry.el.dataset.id = frame.userMessageId;
    setStatus(entry.el, "complete");
  }
  if (fresh && (state.convId === null || state.convId === frame.conversationId)) {
    // The send subscribed this socket to its new conversation; events follow the ack.
    state.convId = frame.conversationId;
    state.cursor = null;
    history.replaceState(null, "", `#c=${encodeURIComponent(frame.conversationId)}`);
    $("rename").hidden = false;
    $("delete").hidden = false;
    loadConversations().then(() => {
      const link = $("conversations").querySelector(`[data-conv="${CSS.escape(frame.conversationId)}"] a`);
      if (link && state.convId === frame.conversationId) setTitle(link.textContent);
      markCurrent();
    }, (err) => fail(err));
  } else if (fresh) {
    // The page moved on meanwhile: do not follow the new conversation.
    wsSend({ type: "unsubscribe", conversationId: frame.conversationId });
  }
  // Later queued sends of that new chat go to the same conversation.
  for (const other of state.queue) {
    if (entry.newChat && other.newChat === entry.newChat && !other.frame.conversationId) {
      other.frame.conversationId = frame.conversationId;
    }
  }
  flushQueue();
}

function onFault(frame) {
  const type = answered(null);
  if (COMMANDS[type]) {
    const entry = state.queue.find((e) => e.inFlight && e.frame.type === type);
    if (entry && frame.code === "rate_limited" && frame.retryAfter) {
      entry.inFlight = false; // the same frame, with the same key, once the limit allows
      setTimeout(flushQueue, Number(frame.retryAfter) * 1000);
      notice(`Too many messages just now: sending again in ${frame.retryAfter} s.`);
      return;
    }
    if (entry) {
      state.queue.splice(state.queue.indexOf(entry), 1);
      if (entry.el) setStatus(entry.el, "error");
      if (entry.hooks && entry.hooks.fault) entry.hooks.fault(frame);
    }
    const failure = describe(frame.code, { field: frame.field, error: frame.error });
    if (type === "send") sendFailed(entry, failure, frame);
    else if (frame.code === "conversation_busy") notice(failure.text);
    else notice(`${COMMANDS[type]} refused: ${failure.text}`, actionsFor(failure.action, null));
    syncControls();
    flushQueue();
    return;
  }
  if (type === "subscribe" && frame.code === "not_found") {
    closeGone("This conversation does not exist (any more).");
    return;
  }
  fail(describe(frame.code, { error: frame.error }));
}

// A send the server refused: its text goes back into the composer (unless something else
// was typed there meanwhile), with what may cure it. Retry sends the composer's text.
function sendFailed(entry, failure, frame) {
  const text = entry ? entry.frame.message : "";
  if (text && !$("input").value.trim()) $("input").value = text;
  // Its files come back too, unless they are what was refused.
  const aboutFiles = frame.field === "attachments" || /^attachments:/.test(frame.error || "");
  if (entry && !aboutFiles) restoreAttachments(entry.attachments);
  syncComposer();
  const retry = () => $("composer").requestSubmit();
  notice(failure.text, actionsFor(failure.action, retry));
  if (failure.action === "shorten") $("input").focus();
}

// ---------- the socket: reconnect with backoff, resume from the cursor ----------

function setConn(text, kind) {
  const box = $("conn");
  box.textContent = text;
  box.dataset.kind = kind;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.ws || !state.user) return;
  setConn("connecting…", "wait");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.wsReady = true;
    state.lastHeard = Date.now();
    state.attempt = 0;
    setConn("live", "ok");
    syncControls();
    subscribeAccount();
    if (state.convId && state.stale) resync(state.convId);
    else if (state.convId) subscribe(state.convId);
    flushQueue();
  };
  ws.onmessage = (msg) => {
    state.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch {
      return;
    }
    onFrame(frame);
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return; // dropped already
    const opened = state.wsReady;
    forget(ws);
    if (event.code === 4001) {
      showSignIn("Your session ended. Sign in again.");
      return;
    }
    if (!state.user) return;
    if (opened || !navigator.onLine) {
      scheduleReconnect();
      return;
    }
    // Refused before it opened: a handshake answered 401 looks like any network error
    // here, so ask whether the session still exists before trying again.
    api("GET", "/api/auth/get-session").then(
      (session) => (session ? scheduleReconnect() : showSignIn("Your session ended. Sign in again.")),
      () => scheduleReconnect(),
    );
  };
}

function forget(ws) {
  state.ws = null;
  state.asked = [];
  state.wsReady = false;
  for (const entry of state.queue) entry.inFlight = false; // re-sent with the same key
  ws.onclose = null;
  ws.onmessage = null;
  syncControls();
}

function dropSocket() {
  // Give up on this socket now (its close handshake may never finish on a dead network).
  const ws = state.ws;
  if (!ws) return;
  forget(ws);
  ws.close();
  if (state.user) scheduleReconnect();
}

async function resync(id) {
  // Messages over REST, then the live log from now, or from a streaming answer's
  // `init` (a refetch after `reset` failed).
  let resume;
  try {
    resume = await loadMessages(id);
  } catch {
    dropSocket();
    return;
  }
  state.stale = false;
  state.cursor = resume;
  if (state.convId === id) subscribe(id);
}

function scheduleReconnect() {
  if (state.reconnectTimer) return;
  if (!navigator.onLine) {
    setConn("offline", "bad");
    return; // the `online` event reconnects
  }
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** state.attempt);
  const delay = base / 2 + Math.random() * (base / 2);
  state.attempt += 1;
  setConn(navigator.onLine ? "reconnecting…" : "offline", "bad");
  state.reconnectTimer = setTimeout(connect, delay);
}

function wsSend(frame) {
  if (!state.wsReady) return false;
  state.ws.send(JSON.stringify(frame));
  state.asked.push(frame.type);
  return true;
}

function subscribeAccount() {
  const frame = { type: "subscribe", channel: "account" };
  if (state.accountCursor) frame.after = `${state.accountCursor.epoch}:${state.accountCursor.seq}`;
  wsSend(frame);
}

function subscribe(id) {
  const frame = { type: "subscribe", conversationId: id };
  if (state.cursor) frame.after = `${state.cursor.epoch}:${state.cursor.seq}`;
  wsSend(frame);
}

function flushQueue() {
  for (const entry of state.queue) {
    if (entry.inFlight) continue;
    if (!entry.frame.conversationId && entry.newChat && state.queue.some((e) => e !== entry && e.newChat === entry.newChat && e.inFlight)) {
      break; // wait for the first send of a new chat to name its conversation
    }
    if (!wsSend(entry.frame)) break;
    entry.inFlight = true;
  }
}

// A silently dead connection (no `offline` event, no close) is found by our own pings:
// the server acks each one, so nothing heard for HEARTBEAT_DEAD_MS means reconnect.
setInterval(() => {
  if (!state.wsReady) return;
  if (Date.now() - state.lastHeard > HEARTBEAT_DEAD_MS) dropSocket();
  else wsSend({ type: "ping" });
}, HEARTBEAT_MS);

window.addEventListener("offline", () => {
  setConn("offline", "bad");
  dropSocket();
});
window.addEventListener("online", () => {
  state.attempt = 0;
  if (!state.ws) connect();
});

// ---------- conversations ----------

function setTitle(text) {
  $("title").textContent = text || "New chat";
}

function conversationItem(c) {
  const link = el("a", { href: `#c=${encodeURIComponent(c.id)}`, class: "conv-link", text: c.shortTitle || "Untitled" });
  const item = el("li", { "data-conv": c.id, "data-updated": c.updatedAt || "" }, link);
  if (c.id === state.convId) item.classList.add("current");
  return item;
}

// The list is grouped by when a conversation was last active, in the viewer's time zone:
// a heading before the first conversation of each group (the list is newest first).
const GROUPS = ["Today", "Yesterday", "Previous 7 days", "Older"];

function groupOf(iso, now = new Date()) {
  const when = new Date(iso);
  if (!iso || Number.isNaN(when.getTime())) return GROUPS[0];
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const day = 24 * 60 * 60 * 1000;
  if (when.getTime() >= midnight) return GROUPS[0];
  if (when.getTime() >= midnight - day) return GROUPS[1];
  if (when.getTime() >= midnight - 7 * day) return GROUPS[2];
  return GROUPS[3];
}

function regroup() {
  const list = $("conversations");
  for (const heading of list.querySelectorAll(":scope > li.conv-group")) heading.remove();
  let current = null;
  for (const item of [...list.children]) {
    const group = groupOf(item.dataset.updated);
    if (group === current) continue;
    current = group;
    // A list item holding a heading: a list holds only list items (axe: "list").
    list.insertBefore(el("li", { class: "conv-group" }, el("span", { role: "heading", "aria-level": "3", text: group })), item);
  }
}

async function loadConversations(more = false) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (more && state.nextCursor) query.set("cursor", state.nextCursor);
  const load = ++state.listLoads;
  if (more) state.moreLoad = load;
  const data = await api("GET", `/api/conversations?${query}`);
  if (!more && state.moreLoad > load) return; // "Load more" went on meanwhile: keep its rows
  state.nextCursorUsed = more;
  const list = $("conversations");
  if (!more) list.replaceChildren();
  for (const c of data.conversations) {
    if (!list.querySelector(`[data-conv="${CSS.escape(c.id)}"]`)) list.append(conversationItem(c));
  }
  state.nextCursor = data.nextCursor;
  $("more").hidden = !data.nextCursor;
  regroup();
}

// Page one again (the account channel said `reset`, or it just started): unless "Load
// more" was used, whose rows a refetch of page one would drop.
function refreshList() {
  if (!state.user || state.nextCursorUsed) return;
  loadConversations().then(markCurrent, () => {});
}

function listItem(id) {
  return $("conversations").querySelector(`:scope > li[data-conv="${CSS.escape(id)}"]`);
}

// Put `item` where its `updatedAt` belongs (the list is newest first).
function place(item) {
  const list = $("conversations");
  const when = Date.parse(item.dataset.updated) || 0;
  for (const other of list.querySelectorAll(":scope > li[data-conv]")) {
    if (other !== item && (Date.parse(other.dataset.updated) || 0) <= when) {
      list.insertBefore(item, other);
      return;
    }
  }
  if (item.parentNode !== list || list.lastElementChild !== item) list.append(item);
}

// A conversation as the account channel tells it (created, or its answer started or
// ended): added, or updated and moved to where its `updatedAt` puts it.
function upsertConversation(c, answering) {
  if (!c || !c.id) return;
  let item = listItem(c.id);
  if (!item) item = conversationItem(c);
  else {
    item.querySelector("a").textContent = c.shortTitle || "Untitled";
    if (c.updatedAt && Date.parse(c.updatedAt) > (Date.parse(item.dataset.updated) || 0)) item.dataset.updated = c.updatedAt;
  }
  if (answering === true) item.dataset.answering = "true";
  else if (answering === false) delete item.dataset.answering;
  place(item);
  regroup();
}

function renameConversation(c) {
  if (!c || !c.id) return;
  const item = listItem(c.id);
  if (item) item.querySelector("a").textContent = c.shortTitle || "Untitled";
  for (const link of $("search-results").querySelectorAll(`li[data-conv="${CSS.escape(c.id)}"] a`)) {
    link.textContent = c.shortTitle || "Untitled";
  }
  if (c.id === state.convId) setTitle(c.shortTitle);
}

// The open conversation is gone: show a new chat with `text` in the notice, and nothing of
// the old one (no presence, no Stop, no frames of it waiting to be sent).
function closeGone(text) {
  const id = state.convId;
  if (!id) return notice(text);
  state.gone = id;
  state.queue = state.queue.filter((e) => e.frame.conversationId !== id);
  history.replaceState(null, "", "#");
  openConversation(null).catch(() => {});
  notice(text);
}

function conversationDeleted(id) {
  const item = listItem(id);
  if (item) item.remove();
  for (const hit of $("search-results").querySelectorAll(`li[data-conv="${CSS.escape(id)}"]`)) hit.remove();
  regroup();
  if (id === state.deleting) return;
  const why = "This conversation was deleted on another device.";
  if (id === state.convId) closeGone(why);
  else if (id === state.gone && $("notice-text").textContent) notice(why); // closed already, on its `not_found`
}

// The account channel (docs/api.md, "Account channel"): the list stays live from it, on
// every device of the user; the focus refetch stays as a fallback.
function onAccount(frame) {
  if (frame.type === "subscribed") {
    // Without a cursor, live from here: the list read before may have missed what happened
    // in between. With one, its replay (or `reset`) follows.
    if (!state.accountCursor) {
      state.accountCursor = { epoch: frame.epoch, seq: frame.seq };
      refreshList();
    }
    return;
  }
  if (frame.type === "unsubscribed") {
    setTimeout(() => {
      if (state.wsReady) subscribeAccount();
    }, 250);
    return;
  }
  if (frame.type === "reset") {
    state.accountCursor = { epoch: frame.epoch, seq: frame.seq };
    state.nextCursorUsed = false;
    refreshList();
    return;
  }
  const cursor = state.accountCursor;
  if (cursor && cursor.epoch === frame.epoch && frame.seq <= cursor.seq) return; // applied already
  if (frame.epoch !== undefined) state.accountCursor = { epoch: frame.epoch, seq: frame.seq };
  switch (frame.type) {
    case "conversation.created":
      upsertConversation(frame.conversation);
      break;
    case "conversation.renamed":
      renameConversation(frame.conversation);
      break;
    case "answer.started":
      upsertConversation(frame.conversation, true);
      break;
    case "answer.ended":
      upsertConversation(frame.conversation, false);
      break;
    case "conversation.deleted":
      conversationDeleted(frame.conversationId);
      break;
    case "session.revoked":
      if (frame.sessionId === state.sessionId) showSignIn("Your session ended. Sign in again.");
      else sessionGone(frame.sessionId);
      break;
    default:
      break;
  }
}

// ---------- search (docs/api.md, Search) ----------

// The server marks matched words with « »; shown as <mark>, never as HTML.
function snippetEl(text) {
  const node = el("div", { class: "snippet" });
  const parts = String(text || "").split(/([«»])/);
  let marked = false;
  for (const part of parts) {
    if (part === "«") marked = true;
    else if (part === "»") marked = false;
    else if (part) node.append(marked ? el("mark", { text: part }) : document.createTextNode(part));
  }
  return node;
}

function showSearch(on) {
  $("search-results").hidden = !on;
  $("conversations").hidden = on;
  if (on) $("more").hidden = true;
  else $("more").hidden = !state.nextCursor;
}

async function search(text) {
  const q = text.trim();
  if (!q) {
    $("search-results").replaceChildren();
    showSearch(false);
    return;
  }
  const data = await api("GET", `/api/search?${new URLSearchParams({ q, limit: "20" })}`);
  const list = $("search-results");
  list.replaceChildren();
  for (const r of data.results) {
    const link = el("a", { href: `#c=${encodeURIComponent(r.conversationId)}`, class: "conv-link", text: r.conversationTitle || "Untitled" });
    list.append(el("li", { "data-conv": r.conversationId }, link, snippetEl(r.snippet)));
  }
  if (!data.results.length) list.append(el("li", { class: "empty", text: `Nothing found for “${q}”` }));
  showSearch(true);
}

function touchConversation(id) {
  const item = $("conversations").querySelector(`[data-conv="${CSS.escape(id)}"]`);
  if (!item) return;
  item.dataset.updated = new Date().toISOString();
  $("conversations").prepend(item);
  regroup();
}

function markCurrent() {
  for (const item of $("conversations").querySelectorAll(":scope > li[data-conv]")) {
    item.classList.toggle("current", item.dataset.conv === state.convId);
  }
}

async function openConversation(id) {
  if (state.convId && state.convId !== id) wsSend({ type: "unsubscribe", conversationId: state.convId });
  state.convId = id;
  state.cursor = null;
  state.stale = false;
  state.resetting = false;
  state.reloads += 1; // a refetch of the conversation left behind ends nothing
  state.held = [];
  notice("");
  showPresence(0);
  closeSidebar();
  $("rename-form").hidden = true;
  $("title").hidden = false;
  $("rename").hidden = !id;
  $("delete").hidden = !id;
  markCurrent();
  if (!id) {
    $("messages").replaceChildren();
    state.texts.clear();
    setStreaming(null);
    setTitle("New chat");
    $("input").focus();
    return;
  }
  let resume;
  try {
    // Messages over REST first, then live from the log: from the `init` of an answer
    // already streaming (replayed whole, replacing its REST text), else from now.
    resume = await loadMessages(id);
  } catch (err) {
    if (err.status === 404) {
      notice("This conversation does not exist (any more).");
      history.replaceState(null, "", "#");
      state.convId = null;
      return;
    }
    throw err;
  }
  if (state.convId === id) {
    state.cursor = resume;
    subscribe(id);
  }
}

function routeFromHash() {
  const match = /^#c=(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id !== state.convId) openConversation(id).catch((err) => fail(err));
}

// ---------- composer ----------

function selectedTools() {
  return Array.from($("tools").querySelectorAll("input:checked"), (box) => box.value);
}

function send(text, attachments) {
  const clientMessageId = randomId();
  const frame = { type: "send", message: text, clientMessageId, aiModel: $("model").value };
  const tools = selectedTools();
  if (tools.length) frame.tools = tools;
  if (attachments.length) frame.attachments = attachments.map((a) => a.id);
  let newChat = null;
  if (state.convId) frame.conversationId = state.convId;
  else {
    const waiting = state.queue.find((e) => e.newChat && !e.frame.conversationId);
    newChat = waiting ? waiting.newChat : randomId();
  }
  const node = addMessage({ role: "user", content: text, status: "streaming", clientMessageId, attachments });
  state.queue.push({ frame, el: node, inFlight: false, newChat, attachments });
  flushQueue();
  syncControls();
  if (!state.wsReady) setConn(navigator.onLine ? "reconnecting…" : "offline — will send when back", "bad");
}

function modelChoice() {
  const choice = { aiModel: $("model").value };
  const tools = selectedTools();
  if (tools.length) choice.tools = tools;
  return choice;
}

// A branch command on a message of the open conversation, queued like a send.
function branchCommand(type, messageId, body, hooks) {
  if (!state.convId) return;
  const frame = { type, conversationId: state.convId, messageId, ...body };
  if (type !== "switch") frame.clientMessageId = randomId();
  state.queue.push({ frame, el: null, inFlight: false, newChat: null, hooks: hooks || null });
  notice("");
  flushQueue();
  syncControls();
  if (!state.wsReady) setConn(navigator.onLine ? "reconnecting…" : "offline — will send when back", "bad");
  return frame;
}

// The editor went away with the old version of an edited message: a focus it left on
// nothing goes to the new version's Edit button (once shown: its ack and its `message`
// event come in either order).
function focusNewVersion(id) {
  const node = messageEl(id);
  if (!node) return;
  state.editFocus = null;
  if (!document.activeElement || document.activeElement === document.body) {
    turnOf(node).querySelector('[data-action="edit"]').focus();
  }
}

const branchCommands = {
  regenerate: (id) => branchCommand("regenerate", id, modelChoice()),
  // The model that wrote the answer carries on (the server's default for a continue).
  continue: (id) => branchCommand("continue", id, {}),
  switch: (id) => branchCommand("switch", id, {}),
  edit: (id, text, article) => {
    const frame = branchCommand("edit", id, { message: text, ...modelChoice() }, {
      ack: (ack) => {
        closeEditor(article, false);
        if (state.editFocus) focusNewVersion(ack.userMessageId);
      },
      fault: () => {
        state.editFocus = null;
        editorSending(article, false);
      },
    });
    state.editFocus = frame ? frame.clientMessageId : null;
  },
};

// The model and tools picked last, per user, on every device: GET/PUT
// /api/user/preferences ({tools, aiModel}; docs/api.md, "Preferences"), read at start and
// saved on each change. A tool the picked model lacks keeps its pick for the next model.
function savePrefs() {
  const tools = new Set(state.prefs.tools);
  for (const box of $("tools").querySelectorAll("input")) {
    if (box.checked) tools.add(box.value);
    else tools.delete(box.value);
  }
  state.prefs = { tools: [...tools], aiModel: $("model").value || null };
  // One PUT at a time, each sending the picks as they are then: the last one stored is the
  // last one made (two in flight could land in either order).
  state.prefSaves = state.prefSaves
    .then(() => api("PUT", "/api/user/preferences", state.prefs))
    .catch(() => {}); // not saved: the picks last as long as the page
}

// What answers a model id: itself, or (shut down) the successor that answers it.
function answering(id) {
  let model = state.models.find((m) => m.id === id);
  for (let hops = 0; model && model.status === "shut_down" && hops < 10; hops += 1) {
    model = state.models.find((m) => m.id === model.successor);
  }
  return model && model.status !== "shut_down" ? model.id : null;
}

// A shut-down model is answered by its successor, which is listed itself: the picker offers
// only the models that answer (a deprecated one says so, and what follows it).
function fillModels() {
  const select = $("model");
  select.replaceChildren();
  const offered = state.models.filter((m) => m.status !== "shut_down");
  const remembered = state.prefs.aiModel ? answering(state.prefs.aiModel) : null;
  for (const m of offered) {
    const option = el("option", { value: m.id, text: m.name || m.id });
    if (m.status === "deprecated") {
      const next = state.models.find((n) => n.id === m.successor);
      option.textContent += next ? ` (deprecated: use ${next.name || next.id})` : " (deprecated)";
    } else if (m.status === "preview") option.textContent += " (preview)";
    if (remembered ? m.id === remembered : m.default) option.selected = true;
    select.append(option);
  }
  fillTools();
}

function fillTools() {
  const model = state.models.find((m) => m.id === $("model").value);
  const box = $("tools");
  const remembered = new Set(state.prefs.tools);
  box.replaceChildren();
  for (const tool of (model && model.tools) || []) {
    const id = `tool-${tool}`;
    const input = el("input", { type: "checkbox", id, value: tool });
    input.checked = remembered.has(tool);
    box.append(el("label", { for: id }, input, ` ${tool.replace(/_/g, " ")}`));
  }
}

// ---------- instructions (docs/api.md, Instructions) ----------

async function showInstructions() {
  $("instructions").hidden = false;
  $("instructions-status").textContent = "";
  const mine = await api("GET", "/api/user/instructions");
  $("user-instructions").value = mine.instructions || "";
  $("conv-instructions-form").hidden = !state.convId;
  if (state.convId) {
    const data = await api("GET", `/api/conversations/${encodeURIComponent(state.convId)}/messages`);
    $("conv-instructions").value = data.conversation.instructions || "";
  }
  $("user-instructions").focus();
}

async function saveInstructions(kind) {
  const status = $("instructions-status");
  if (kind === "user") {
    const text = $("user-instructions").value;
    await api("PUT", "/api/user/instructions", { instructions: text.trim() ? text : null });
    status.textContent = "Saved: they apply from your next message.";
  } else if (state.convId) {
    const text = $("conv-instructions").value;
    await api("PATCH", `/api/conversations/${encodeURIComponent(state.convId)}`, {
      instructions: text.trim() ? text : null,
    });
    status.textContent = "Saved for this conversation: they apply from its next message.";
  }
}

// ---------- sign in / out ----------

function showSignIn(message) {
  state.user = null;
  state.sessionId = null;
  state.accountCursor = null;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  dropSocket();
  $("app").hidden = true;
  $("signin").hidden = false;
  const github = document.body.dataset.github === "true";
  const local = document.body.dataset.local === "true";
  $("signin-github").hidden = !github;
  $("signin-local").hidden = !local;
  $("signin-none").hidden = github || local;
  if (message) $("signin").querySelector("p").textContent = message;
}

async function start() {
  const session = await api("GET", "/api/auth/get-session");
  if (!session) {
    showSignIn();
    return;
  }
  state.user = session.user;
  state.sessionId = session.session ? session.session.id : null;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = session.user.name || session.user.email || "";
  // Every id (shut-down ones too, with their successors): a remembered retired model is
  // shown as the one that answers it. The picker lists only those that answer.
  const [models, prefs] = await Promise.all([
    api("GET", "/api/models?all=true"),
    api("GET", "/api/user/preferences").catch(() => null),
  ]);
  if (prefs && Array.isArray(prefs.tools)) state.prefs = prefs;
  state.models = models.models;
  if (Number.isInteger(models.maxMessageChars) && models.maxMessageChars > 0) state.maxChars = models.maxMessageChars;
  fillModels();
  syncComposer();
  connect();
  await loadConversations();
  routeFromHash();
  if (!state.convId) $("input").focus();
}

// ---------- wiring ----------

function closeSidebar() {
  document.body.classList.remove("list-open");
  $("toggle-list").setAttribute("aria-expanded", "false");
}

function wire() {
  wireActions($("messages"), branchCommands);
  wireAttachments(syncComposer);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text) {
      if (readyAttachments().length || uploading()) notice("Write a message to go with the files, then send.");
      return;
    }
    if (failedUploads()) {
      notice("A file could not be uploaded: remove it (or pick it again), then send.");
      return;
    }
    if (uploading()) {
      // Send waits for the uploads (files added meanwhile too), then sends what the
      // composer holds by then.
      if (!state.sendAfterUploads) {
        state.sendAfterUploads = true;
        syncComposer();
        const sendWhenUploaded = () => uploadsSettled().then(() => {
          if (uploading()) return sendWhenUploaded();
          state.sendAfterUploads = false;
          syncComposer();
          $("composer").requestSubmit();
          return null;
        });
        sendWhenUploaded();
      }
      return;
    }
    if (messageLength(text) > state.maxChars) {
      fail(describe("invalid_request", { field: "message", error: "message: at most" }));
      return;
    }
    if (sendBlocked()) {
      notice("Cero is still answering: wait for it, or press Stop (Esc). Your message stays here.");
      return;
    }
    // A failed send of ours (kept in the log as failed) gives way to this one.
    for (const failed of $("messages").querySelectorAll(':scope > .turn > article.user[data-status="error"]:not([data-id])')) {
      turnOf(failed).remove();
    }
    $("input").value = "";
    notice("");
    const attachments = readyAttachments();
    clearAttachments();
    send(text, attachments);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    } else if (event.key === "Escape" && state.streaming && !$("stop").hidden) {
      event.preventDefault();
      event.stopPropagation();
      $("stop").click(); // Esc in the composer stops the answer
    }
  });
  $("input").addEventListener("input", syncComposer);
  if (TOUCH) $("input").placeholder = "Message Cero";
  $("stop").addEventListener("click", () => {
    const frame = { type: "cancel", conversationId: state.convId };
    if (state.streaming && state.streaming.generationId) frame.generationId = state.streaming.generationId;
    if (wsSend(frame)) $("stop").disabled = true;
    $("input").focus(); // Stop goes away with the answer: the focus must not fall to <body>
  });
  $("model").addEventListener("change", () => {
    fillTools();
    savePrefs();
  });
  $("tools").addEventListener("change", savePrefs);
  $("new-chat").addEventListener("click", () => {
    history.pushState(null, "", "#");
    openConversation(null);
  });
  $("more").addEventListener("click", () => loadConversations(true).catch((err) => fail(err)));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search-input").value).catch((err) => fail(err));
  });
  $("search-input").addEventListener("input", () => {
    if (!$("search-input").value.trim()) search("").catch(() => {});
  });
  $("search-input").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      $("search-input").value = "";
      search("").catch(() => {});
    }
  });
  $("sign-out").addEventListener("click", async () => {
    // Our own sign-out closes the socket with 4001 too: drop it first, so the page says
    // what happened ("You signed out"), not "Your session ended".
    state.user = null;
    const ws = state.ws;
    if (ws) {
      forget(ws);
      ws.close();
    }
    await api("POST", "/api/auth/sign-out", {});
    showSignIn("You signed out.");
  });
  $("open-sessions").addEventListener("click", () => showSessions(api, fail).catch((err) => fail(err)));
  $("revoke-others").addEventListener("click", () => revokeOthers(api).catch((err) => {
    $("sessions-status").textContent = describeError(err).text;
  }));
  $("open-instructions").addEventListener("click", () => showInstructions().catch((err) => fail(err)));
  $("close-instructions").addEventListener("click", () => {
    $("instructions").hidden = true;
    $("open-instructions").focus();
  });
  for (const kind of ["user", "conv"]) {
    $(`${kind}-instructions-form`).addEventListener("submit", (event) => {
      event.preventDefault();
      saveInstructions(kind).catch((err) => {
        $("instructions-status").textContent = describeError(err).text;
      });
    });
  }
  $("close-sessions").addEventListener("click", () => {
    $("sessions").hidden = true;
    $("open-sessions").focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("sessions").hidden) $("close-sessions").click();
    if (event.key === "Escape" && !$("instructions").hidden) $("close-instructions").click();
  });
  $("rename").addEventListener("click", () => {
    $("rename-input").value = $("title").textContent;
    $("title").hidden = true;
    $("rename-form").hidden = false;
    $("rename-input").focus();
  });
  // The form goes away when renaming ends: the focus goes back to the composer, not <body>.
  const endRename = () => {
    $("rename-form").hidden = true;
    $("title").hidden = false;
    $("input").focus();
  };
  $("rename-cancel").addEventListener("click", endRename);
  $("rename-input").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      endRename();
    }
  });
  $("rename-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const title = $("rename-input").value.trim();
    if (!title || !state.convId) return endRename();
    let data;
    try {
      data = await api("PATCH", `/api/conversations/${encodeURIComponent(state.convId)}`, { shortTitle: title });
    } catch (err) {
      fail(err, () => $("rename-form").requestSubmit());
      return;
    }
    renameConversation(data.conversation);
    endRename();
  });
  $("delete").addEventListener("click", async () => {
    const id = state.convId;
    if (!id || !window.confirm("Delete this conversation?")) return;
    state.deleting = id; // its `conversation.deleted` may come before the answer
    try {
      await api("DELETE", `/api/conversations/${encodeURIComponent(id)}`);
    } catch (err) {
      state.deleting = null;
      fail(err);
      return;
    }
    const item = listItem(id);
    if (item) item.remove();
    regroup();
    if (state.convId === id) {
      history.pushState(null, "", "#");
      await openConversation(null);
    }
    state.deleting = null;
  });
  $("toggle-list").addEventListener("click", () => {
    const open = document.body.classList.toggle("list-open");
    $("toggle-list").setAttribute("aria-expanded", String(open));
  });
  window.addEventListener("hashchange", routeFromHash);
  // The account channel keeps the list live; as a fallback (a channel event lost, say, in
  // cluster mode while Redis was down) the first page is refetched when the tab is looked
  // at again.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.user && !state.nextCursorUsed) {
      loadConversations().then(markCurrent, () => {});
    }
  });
}

wire();
start().catch((err) => fail(err, () => location.reload()));
