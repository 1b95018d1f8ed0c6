// Cero web app: the conversation-branch controls (docs/api.md, "Branches"). This module owns
// the DOM of each message's action bar (Regenerate, Copy and Continue on an answer, Edit and
// Copy on a message of yours, the ‹ n / m › switcher between sibling versions) and the
// inline editor. It knows nothing of the socket: app.js hands it the commands to run
// (`wireActions`) and tells it when the conversation is busy (`syncActions`).
//
// A message is a `.turn` holding its `<article class="msg">` (data-id, data-status,
// data-finish, data-siblings: the JSON list of its sibling ids, oldest first) and its bar.

import { copyText, selectContents } from "./clipboard.js";
import { el } from "./dom.js";

const CONTINUABLE = new Set(["cancelled", "interrupted"]);
let commands = null; // {regenerate(id), continue(id), switch(id), edit(id, text, article)}

function button(action, text, label) {
  return el("button", { type: "button", class: "ghost", "data-action": action, "aria-label": label, text });
}

/** The (empty) action bar of a new message; `syncActions` fills in its state. */
export function actionBar(role) {
  const mine = role === "user";
  const bar = el("div", { class: "msg-actions", role: "group", "aria-label": mine ? "Message actions" : "Answer actions" },
    el("span", { class: "switcher", hidden: "" },
      button("prev", "‹", "Previous version"),
      el("span", { class: "count" }),
      button("next", "›", "Next version")));
  if (mine) bar.append(button("edit", "Edit", "Edit message"), button("copy", "Copy", "Copy message"));
  else {
    bar.append(button("regenerate", "Regenerate", "Regenerate answer"), button("copy", "Copy", "Copy answer"),
      button("continue", "Continue", "Continue answer"));
  }
  return bar;
}

/** Where a message sits among its siblings: {ids, index} (ids always holds the message). */
export function siblingsOf(article) {
  const id = article.dataset.id;
  let ids = [];
  try {
    ids = JSON.parse(article.dataset.siblings || "[]");
  } catch {
    ids = [];
  }
  if (!Array.isArray(ids) || !ids.includes(id)) ids = id ? [id] : [];
  return { ids, index: ids.indexOf(id) };
}

function continuable(article) {
  return CONTINUABLE.has(article.dataset.status) || article.dataset.finish === "MAX_TOKENS";
}

// A bar's button that cannot be used now is marked `aria-disabled` rather than `disabled`:
// it keeps the focus (a disabled button loses it), so a keyboard user who pressed it stays
// in place while the server answers. Clicks on it do nothing.
function setUsable(button, usable) {
  if (usable) button.removeAttribute("aria-disabled");
  else button.setAttribute("aria-disabled", "true");
}

function usable(button) {
  return button.getAttribute("aria-disabled") !== "true";
}

/**
 * Bring every bar in `box` up to date: the switchers' counts and targets, Continue only on
 * the last answer when it was cut short, everything that asks the server unusable while
 * `busy` (the conversation is generating, or a command is on its way).
 */
export function syncActions(box, busy) {
  const turns = Array.from(box.querySelectorAll(":scope > .turn"));
  const known = turns.filter((turn) => turn.querySelector("article").dataset.id);
  const leaf = known[known.length - 1];
  for (const turn of turns) {
    const article = turn.querySelector("article");
    const bar = turn.querySelector(".msg-actions");
    bar.hidden = !article.dataset.id; // a message not yet stored has no actions
    if (bar.hidden) continue;
    const { ids, index } = siblingsOf(article);
    const switcher = bar.querySelector(".switcher");
    switcher.hidden = ids.length < 2;
    switcher.querySelector(".count").textContent = `${index + 1} / ${ids.length}`;
    const where = `(showing ${index + 1} of ${ids.length})`;
    for (const [action, target] of [["prev", ids[index - 1]], ["next", ids[index + 1]]]) {
      const b = bar.querySelector(`[data-action="${action}"]`);
      b.dataset.target = target || "";
      setUsable(b, !busy && Boolean(target));
      b.setAttribute("aria-label", `${action === "prev" ? "Previous" : "Next"} version ${where}`);
    }
    for (const b of bar.querySelectorAll('[data-action="regenerate"], [data-action="edit"], [data-action="continue"]')) {
      setUsable(b, !busy);
    }
    const more = bar.querySelector('[data-action="continue"]');
    if (more) more.hidden = turn !== leaf || !continuable(article);
    const save = turn.querySelector(".editor .save");
    if (save) save.disabled = busy || turn.querySelector(".editor").dataset.sending === "true";
  }
}

// ---------- the inline editor ----------

/** Turn a message of yours into a textarea with Save & send / Cancel. */
export function startEdit(article, draft) {
  const turn = article.closest(".turn");
  const open = article.querySelector(".editor textarea");
  if (open) {
    open.focus();
    return;
  }
  const body = article.querySelector(".body");
  const area = el("textarea", { rows: "3", "aria-label": "Edit your message", maxlength: "100000" });
  area.value = draft === undefined ? body.textContent : draft;
  const save = el("button", { type: "submit", class: "primary save", text: "Save & send" });
  const cancel = el("button", { type: "button", class: "ghost", text: "Cancel" });
  const status = el("span", { class: "note edit-status", role: "status" });
  const form = el("form", { class: "editor", "aria-label": "Edit message" }, area,
    el("div", { class: "editor-row" }, save, cancel, status));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = area.value.trim();
    if (!text || save.disabled || !article.dataset.id) return;
    editorSending(article, true);
    commands.edit(article.dataset.id, text, article);
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      closeEditor(article, true);
    }
  });
  cancel.addEventListener("click", () => closeEditor(article, true));
  body.hidden = true;
  turn.classList.add("editing");
  body.after(form);
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

/** Back to the message's text; `refocus`: put the focus on its Edit button again. */
export function closeEditor(article, refocus) {
  const form = article.querySelector(".editor");
  if (!form) return;
  form.remove();
  article.querySelector(".body").hidden = false;
  const turn = article.closest(".turn");
  turn.classList.remove("editing");
  if (refocus) turn.querySelector('[data-action="edit"]').focus();
}

/** The editor waits for the server (`sending`), or takes input again after a refusal. */
export function editorSending(article, sending) {
  const form = article.querySelector(".editor");
  if (!form) return;
  form.dataset.sending = String(sending);
  form.querySelector(".save").disabled = sending;
  form.querySelector(".edit-status").textContent = sending ? "Sending…" : "";
  if (!sending) form.querySelector("textarea").focus();
}

/** The open editor's message id and draft, to put it back after the messages are redrawn. */
export function openDraft(box) {
  const area = box.querySelector(".turn.editing .editor textarea");
  if (!area) return null;
  return { id: area.closest("article").dataset.id, text: area.value };
}

// ---------- copy ----------

async function copy(button, article) {
  const text = article.dataset.text !== undefined ? article.dataset.text : article.querySelector(".body").textContent;
  const done = await copyText(text);
  button.focus();
  if (!done) {
    // Nothing could write the clipboard: select the text for the reader to copy.
    selectContents(article.querySelector(".body"));
  }
  button.textContent = done ? "Copied" : "Selected: press Ctrl+C";
  clearTimeout(button.copyTimer);
  button.copyTimer = setTimeout(() => {
    button.textContent = "Copy";
  }, 2000);
}

// ---------- focus across a redraw ----------

/** Which action button of which message (by position) has the focus, if any. */
export function rememberFocus(box) {
  const active = document.activeElement;
  const turn = active && active.closest ? active.closest(".turn") : null;
  if (!turn || turn.parentElement !== box || !active.dataset.action) return null;
  return { index: Array.prototype.indexOf.call(box.children, turn), action: active.dataset.action };
}

/** Focus the same button at the same position again, else the first one shown in its bar. */
export function restoreFocus(box, spot) {
  if (!spot) return;
  const turn = box.children[spot.index];
  if (!turn) return;
  const shown = (b) => b && b.offsetParent !== null;
  const same = turn.querySelector(`.msg-actions [data-action="${spot.action}"]`);
  const target = shown(same) ? same : Array.from(turn.querySelectorAll(".msg-actions button")).find(shown);
  if (target) target.focus();
}

// ---------- wiring ----------

/** One click handler for every bar in `box`; `handlers` send the commands. */
export function wireActions(box, handlers) {
  commands = handlers;
  box.addEventListener("click", (event) => {
    const button = event.target.closest(".msg-actions button[data-action]");
    if (!button || !usable(button) || !box.contains(button)) return;
    const article = button.closest(".turn").querySelector("article");
    const id = article.dataset.id;
    if (!id) return;
    const action = button.dataset.action;
    if (action === "copy") copy(button, article);
    else if (action === "edit") startEdit(article);
    else if (action === "regenerate") commands.regenerate(id);
    else if (action === "continue") commands.continue(id);
    else if ((action === "prev" || action === "next") && button.dataset.target) commands.switch(button.dataset.target);
  });
}
