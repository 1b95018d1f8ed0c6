// Cero web app: what a failure means to the person at the page. Every error code of the
// API (docs/api.md, "Error code index", the WebSocket fault codes and the generation error
// codes) gets one sentence and the action that may cure it; the server's own words (a
// field name, a validation detail) are never shown as they are.
//
// Actions: "retry" (the same again), "model" (choose another model), "shorten" (the
// message is too long), null (nothing to do but read).

const TEXTS = {
  rate_limited: ["Too many requests just now. Wait a moment, then retry.", "retry"],
  upstream_unavailable: ["The model is not answering right now. Retry in a moment, or choose another model.", "retry"],
  upstream_timeout: ["The model took too long to answer. Retry, or choose another model.", "retry"],
  bad_request: ["The model could not take this request. Rephrase it, or choose another model.", "model"],
  blocked: ["The model declined to answer this. Try rephrasing your message.", null],
  owner_lost: ["The server answering this stopped before the end. Retry to get a whole answer.", "retry"],
  server_shutdown: ["The server is restarting. Retry in a moment.", "retry"],
  internal: ["Something went wrong on our side. Retry in a moment.", "retry"],
  overloaded: ["The server is busy right now. Retry in a moment.", "retry"],
  over_capacity: ["The server is busy right now. Retry in a moment.", "retry"],
  not_ready: ["The server is not ready right now. Retry in a moment.", "retry"],
  too_many_connections: ["Too many connections from here. Close a tab or two, then retry.", "retry"],
  request_timeout: ["The connection was too slow. Retry.", "retry"],
  conversation_busy: ["Cero is still answering: wait for it, or press Stop.", null],
  not_continuable: ["That answer cannot be continued.", null],
  unknown_model: ["That model is not available any more. Choose another model.", "model"],
  unsupported_tools: ["The chosen model cannot use those tools. Untick them, or choose another model.", "model"],
  payload_too_large: ["That is too long to send. Shorten it, then send it again.", "shorten"],
  not_found: ["This conversation does not exist (any more).", null],
  too_many_subscriptions: ["Too many conversations are open on this page. Reload it.", null],
  unauthorized: ["Your session ended. Sign in again.", null],
  forbidden: ["The server refused this from this page. Reload it and retry.", null],
  network: ["Cannot reach the server. Check your connection, then retry.", "retry"],
};

const GENERIC = ["Something went wrong. Retry in a moment.", "retry"];

/**
 * `{text, action}` for a failure: `code` as the API names it, with `field` and the
 * server's `error` text only to tell apart the kinds of `invalid_request` (a message over
 * the length limit is the one a person can cure).
 */
export function describe(code, { field, error } = {}) {
  if ((code === "invalid_request" || code === "invalid_frame")
      && (field === "attachments" || /^attachments:/.test(error || ""))) {
    return { text: "A file of this message can no longer be sent (deleted, or sent in another conversation). Attach it again, then send.", action: null };
  }
  if (code === "invalid_request" || code === "invalid_frame") {
    const aboutMessage = field === "message" || /^message:/.test(error || "");
    if (aboutMessage && /at most/.test(error || "")) {
      return { text: "Your message is too long to send. Shorten it, then send it again.", action: "shorten" };
    }
    if (aboutMessage) return { text: "This message cannot be sent as it is. Change it, then send it again.", action: null };
    return { text: "The server did not accept that. Check what you entered and retry.", action: "retry" };
  }
  const [text, action] = TEXTS[code] || GENERIC;
  return { text, action };
}

/** The same for something thrown: an API refusal (its code) or a network failure. */
export function describeError(err) {
  if (err && err.code) return describe(err.code, { field: err.field, error: err.message });
  if (err instanceof TypeError) return describe("network"); // fetch's "Failed to fetch"
  return { text: GENERIC[0], action: null };
}

// ---------- uploads (docs/api.md, "Attachments") ----------

const TYPE_NAMES = {
  "image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP", "image/gif": "GIF",
  "application/pdf": "PDF", "text/plain": "plain text (code too)", "text/markdown": "Markdown",
  "audio/mpeg": "MP3", "audio/wav": "WAV", "audio/ogg": "Ogg audio",
};

/** A size for people: "900 bytes", "4 KB", "20 MB" (1024-based, as the limits are set). */
export function formatSize(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1024) return `${n} ${n === 1 ? "byte" : "bytes"}`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value >= 10 || Number.isInteger(value) ? Math.round(value) : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

/** "PNG, JPEG, PDF…": accepted MIME types as people name them. */
export function typeNames(types) {
  return (types || []).map((t) => TYPE_NAMES[t] || t).join(", ");
}

/**
 * One sentence for a refused or failed upload: `status` the HTTP status (0: the network),
 * `data` the refusal's JSON ({code, limit, accepted}). A file too large names the limit,
 * an unaccepted type says which types are.
 */
export function describeUpload(status, data) {
  const code = (data && data.code) || (status === 0 ? "network" : null);
  const limit = data && Number.isFinite(data.limit) ? formatSize(data.limit) : null;
  if (code === "payload_too_large") {
    return limit ? `Too large: files can be at most ${limit}.` : "Too large to upload.";
  }
  if (code === "quota_exceeded") {
    return limit
      ? `No room left: your files may take ${limit} together. Delete old conversations to make room.`
      : "No room left for your files. Delete old conversations to make room.";
  }
  if (code === "unsupported_media_type") {
    const accepted = typeNames(data && data.accepted);
    return accepted ? `This kind of file is not accepted. Accepted: ${accepted}.` : "This kind of file is not accepted.";
  }
  if (code === "invalid_request") return "This file cannot be uploaded (is it empty?).";
  if (code === "unauthorized") return TEXTS.unauthorized[0];
  if (code === "network") return "The upload failed: cannot reach the server. Remove the file and try again.";
  const [text] = TEXTS[code] || GENERIC;
  return text;
}
