// Cero web app: attachments (docs/api.md, "Attachments"). Files come in three ways — the
// Attach button (a hidden file input), dropped on the composer, pasted into the message
// box — and each is uploaded at once (POST /api/attachments, with XMLHttpRequest for its
// upload progress), shown as a chip: name, size, a preview of an image (an object URL, so
// img-src allows blob:), its progress, its failure in plain words, and Remove. A send takes
// the ids of the finished uploads; the log shows a message's attachments: an image as its
// thumbnail (GET …/thumbnail), anything else as a download link with its size.

import { $, el } from "./dom.js";
import { describeUpload, formatSize } from "./failures.js";

export const MAX_ATTACHMENTS = 10; // per message, as the server allows

// The files picked for the next send, in order: {key, file, name, size, id, mimeType,
// status ("uploading" | "done" | "error"), xhr, url, chip, done (a promise)}.
const pending = [];
let onChange = () => {};
let keys = 0;

/** Wire the button, the input, drag-and-drop and paste; `changed()` after every change. */
export function wireAttachments(changed) {
  onChange = changed;
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    addFiles($("file-input").files);
    $("file-input").value = ""; // the same file again is a new pick
  });
  const composer = $("composer");
  let depth = 0; // dragenter/dragleave pairs of the composer's children
  const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  composer.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    composer.classList.add("dropping");
  });
  composer.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // this is a drop target
    event.dataTransfer.dropEffect = "copy";
    composer.classList.add("dropping");
  });
  composer.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) composer.classList.remove("dropping");
  });
  composer.addEventListener("drop", (event) => {
    depth = 0;
    composer.classList.remove("dropping");
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault(); // not opened by the browser
    addFiles(event.dataTransfer.files);
    $("input").focus();
  });
  // A file dropped beside the composer is not opened by the browser in the page's place.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!carriesFiles(event) || composer.contains(event.target)) return;
      event.preventDefault();
      if (type === "drop") {
        depth = 0;
        composer.classList.remove("dropping");
      }
    });
  }
  $("input").addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files || []) : [];
    if (!files.length) return; // text pastes as text
    event.preventDefault();
    addFiles(files);
  });
}

function addFiles(list) {
  const files = Array.from(list || []);
  const room = MAX_ATTACHMENTS - pending.length;
  if (files.length > room) say(`At most ${MAX_ATTACHMENTS} files go with one message: ${files.length - Math.max(room, 0)} not added.`);
  for (const file of files.slice(0, Math.max(room, 0))) upload(file);
  changed();
}

function say(text) {
  $("attach-status").textContent = text;
}

function changed() {
  $("attachments").hidden = !pending.length;
  onChange();
}

function upload(file) {
  const entry = { key: `a${(keys += 1)}`, file, name: file.name || "file", size: file.size, id: null, mimeType: null, status: "uploading", xhr: null, url: null };
  if (/^image\//.test(file.type)) entry.url = URL.createObjectURL(file);
  entry.chip = chipFor(entry);
  pending.push(entry);
  $("attachments").append(entry.chip);
  entry.done = new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    entry.xhr = xhr;
    const bar = entry.chip.querySelector("progress");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = event.loaded / event.total;
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status === 201 && data && data.attachment) {
        Object.assign(entry, { id: data.attachment.id, mimeType: data.attachment.mimeType, size: data.attachment.size });
        setStatus(entry, "done");
      } else failed(entry, describeUpload(xhr.status, data));
      resolve();
    });
    xhr.addEventListener("error", () => {
      failed(entry, describeUpload(0, null));
      resolve();
    });
    xhr.addEventListener("abort", () => resolve());
    xhr.open("POST", "/api/attachments");
    xhr.withCredentials = true;
    const form = new FormData();
    form.append("file", file, entry.name);
    xhr.send(form);
  });
}

function chipFor(entry) {
  const icon = () => el("span", { class: "chip-icon", "aria-hidden": "true", text: extension(entry.name) });
  let preview = icon();
  if (entry.url) {
    preview = el("img", { class: "chip-preview", src: entry.url, alt: "" });
    // Not an image after all (only its declared type said so): its extension instead.
    preview.addEventListener("error", () => preview.replaceWith(icon()), { once: true });
  }
  const remove = el("button", { type: "button", class: "ghost chip-remove", "aria-label": `Remove ${entry.name}`, title: "Remove", text: "×" });
  remove.addEventListener("click", () => removeEntry(entry, true));
  return el(
    "li",
    { class: "chip", "data-key": entry.key, "data-status": "uploading" },
    preview,
    el(
      "span",
      { class: "chip-text" },
      el("span", { class: "chip-name", text: entry.name }),
      el("span", { class: "chip-size", text: formatSize(entry.size) }),
      el("progress", { max: "1", value: "0", "aria-label": `Uploading ${entry.name}` }),
      el("span", { class: "chip-error", role: "alert" }),
    ),
    remove,
  );
}

// What stands for a file without a preview: its extension ("PDF", "MD"), else "FILE".
function extension(name) {
  const match = /\.([A-Za-z0-9]{1,4})$/.exec(name || "");
  return match ? match[1].toUpperCase() : "FILE";
}

function setStatus(entry, status) {
  entry.status = status;
  entry.chip.dataset.status = status;
  entry.chip.querySelector("progress").hidden = status !== "uploading";
  changed();
}

function failed(entry, text) {
  entry.chip.querySelector(".chip-error").textContent = text;
  setStatus(entry, "error");
}

function removeEntry(entry, focus) {
  const at = pending.indexOf(entry);
  if (at < 0) return;
  pending.splice(at, 1);
  if (entry.status === "uploading" && entry.xhr) entry.xhr.abort();
  if (entry.url) URL.revokeObjectURL(entry.url);
  const next = entry.chip.nextElementSibling || entry.chip.previousElementSibling;
  entry.chip.remove();
  say(`${entry.name} removed.`);
  changed();
  if (focus) (next ? next.querySelector(".chip-remove") : $("input")).focus();
}

/** Uploads still running. */
export function uploading() {
  return pending.some((e) => e.status === "uploading");
}

/** Uploads that failed (the send waits until they are removed). */
export function failedUploads() {
  return pending.filter((e) => e.status === "error").length;
}

/** Resolves when every upload running now has ended. */
export function uploadsSettled() {
  return Promise.all(pending.map((e) => e.done));
}

/** The finished uploads, for a send: [{id, name, mimeType, size}]. */
export function readyAttachments() {
  return pending.filter((e) => e.status === "done").map(({ id, name, mimeType, size }) => ({ id, name, mimeType, size }));
}

/** A send took them: the chips go (the uploads stay the server's until sent or swept). */
export function clearAttachments() {
  for (const entry of pending.splice(0)) {
    if (entry.url) URL.revokeObjectURL(entry.url);
    entry.chip.remove();
  }
  say("");
  changed();
}

/** A refused send gives its attachments back to the composer (unless others wait there). */
export function restoreAttachments(list) {
  if (pending.length || !list || !list.length) return;
  for (const a of list) {
    const entry = { key: `a${(keys += 1)}`, file: null, name: a.name, size: a.size, id: a.id, mimeType: a.mimeType, status: "done", xhr: null, url: null, done: Promise.resolve() };
    entry.chip = chipFor(entry);
    pending.push(entry);
    $("attachments").append(entry.chip);
    setStatus(entry, "done");
  }
}

/** A message's attachments in the log: image thumbnails (opening the image), links. */
export function attachmentsEl(list) {
  const box = el("ul", { class: "attachments", "aria-label": "Attachments" });
  for (const a of list || []) {
    if (!a || typeof a.id !== "string") continue;
    const href = `/api/attachments/${encodeURIComponent(a.id)}`;
    const label = `${a.name || "file"} (${formatSize(a.size)})`;
    let item;
    if (/^image\//.test(a.mimeType || "")) {
      const img = el("img", { class: "thumb", src: `${href}/thumbnail`, alt: a.name || "image", loading: "lazy" });
      img.addEventListener("error", () => img.replaceWith(el("span", { class: "thumb-missing", text: label })), { once: true });
      item = el("a", { class: "attachment image", href, target: "_blank", rel: "noopener", title: label }, img);
    } else {
      item = el("a", { class: "attachment file", href, download: a.name || "file" },
        el("span", { class: "file-name", text: a.name || "file" }), el("span", { class: "file-size", text: formatSize(a.size) }));
    }
    box.append(el("li", {}, item));
  }
  return box;
}
