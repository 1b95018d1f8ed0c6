// Cero web app: the Sessions panel (docs/api.md, "Sessions"): each signed-in device with a
// name a person recognises (from its user agent), when it was last active, Revoke, and
// "Sign out everywhere else". It asks the server only through the `api` function app.js
// hands it.

import { $, el } from "./dom.js";

const BROWSERS = [
  [/\bEdg(e|A|iOS)?\//, "Edge"],
  [/\bOPR\//, "Opera"],
  [/\bSamsungBrowser\//, "Samsung Internet"],
  [/\b(Firefox|FxiOS)\//, "Firefox"],
  [/\b(HeadlessChrome|Chrome|Chromium|CriOS)\//, "Chrome"],
  [/\bSafari\//, "Safari"],
];
const SYSTEMS = [
  [/\biPhone\b/, "iPhone"],
  [/\biPad\b/, "iPad"],
  [/\bAndroid\b/, "Android"],
  [/\bWindows\b/, "Windows"],
  [/\bCrOS\b/, "ChromeOS"],
  [/\b(Macintosh|Mac OS X)\b/, "macOS"],
  [/\bLinux\b/, "Linux"],
];

/** "Firefox on Windows", "Cero CLI", "curl"…: a user agent as a person knows the device. */
export function deviceName(ua) {
  const text = String(ua || "").trim();
  if (!text) return "Unknown device";
  if (/^cero-cli\b/i.test(text)) return "Cero CLI (terminal)";
  const browser = (BROWSERS.find(([re]) => re.test(text)) || [])[1];
  const system = (SYSTEMS.find(([re]) => re.test(text)) || [])[1];
  if (browser && system) return `${browser} on ${system}`;
  if (browser || system) return browser || system;
  // Anything else (curl/8.5, python-httpx/0.27): its product name, without the version.
  return text.split(/[/;(]/)[0].trim().slice(0, 40) || "Unknown device";
}

/** "just now", "5 minutes ago", "3 hours ago", "2 days ago", else the date. */
export function lastActive(iso, now = Date.now()) {
  const when = Date.parse(iso);
  if (Number.isNaN(when)) return "";
  const minutes = Math.round((now - when) / 60000);
  if (minutes < 1) return "active just now";
  if (minutes < 60) return `active ${minutes} minute${minutes === 1 ? "" : "s"} ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `active ${hours} hour${hours === 1 ? "" : "s"} ago`;
  const days = Math.round(hours / 24);
  if (days < 7) return `active ${days} day${days === 1 ? "" : "s"} ago`;
  return `active ${new Date(when).toLocaleDateString()}`;
}

function row(api, s, onGone) {
  const when = new Date(s.updatedAt || s.createdAt);
  const active = el("time", { datetime: Number.isNaN(when.getTime()) ? "" : when.toISOString(), text: lastActive(s.updatedAt || s.createdAt) });
  active.title = `Signed in ${new Date(s.createdAt).toLocaleString()}`;
  const label = el("div", { class: "session-info" },
    el("strong", { text: deviceName(s.userAgent) }),
    el("span", { class: "note" }, active, s.ipAddress ? ` · ${s.ipAddress}` : ""));
  if (s.userAgent) label.title = s.userAgent;
  const item = el("li", { "data-session": s.id }, label);
  if (s.current) {
    item.append(el("span", { class: "pill", text: "this device" }));
    return item;
  }
  const revoke = el("button", { type: "button", class: "ghost danger", text: "Revoke", "aria-label": `Revoke ${deviceName(s.userAgent)}` });
  revoke.addEventListener("click", async () => {
    revoke.disabled = true;
    try {
      await api("POST", "/api/auth/revoke-session", { id: s.id });
    } catch (err) {
      revoke.disabled = false;
      onGone(null, err);
      return;
    }
    item.remove();
    onGone(s.id, null);
  });
  item.append(revoke);
  return item;
}

function syncOthers() {
  const others = $("session-list").querySelectorAll("li[data-session] button").length;
  $("revoke-others").hidden = others === 0;
}

/** Open the panel and list the sessions; `onError(err)` for a refusal. */
export async function showSessions(api, onError) {
  $("sessions").hidden = false;
  $("sessions-status").textContent = "";
  const list = $("session-list");
  list.replaceChildren(el("li", { text: "Loading…" }));
  $("revoke-others").hidden = true;
  $("close-sessions").focus();
  const sessions = await api("GET", "/api/auth/list-sessions");
  list.replaceChildren();
  for (const s of sessions) {
    list.append(row(api, s, (id, err) => {
      if (err) onError(err);
      else {
        syncOthers();
        $("sessions-status").textContent = "Signed out that device.";
        $("close-sessions").focus(); // the row, and its button, are gone
      }
    }));
  }
  syncOthers();
}

/** "Sign out everywhere else": every session but this page's. */
export async function revokeOthers(api) {
  const button = $("revoke-others");
  button.disabled = true;
  try {
    await api("POST", "/api/auth/revoke-other-sessions", {});
  } finally {
    button.disabled = false;
  }
  for (const item of $("session-list").querySelectorAll("li[data-session]")) {
    if (item.querySelector("button")) item.remove();
  }
  syncOthers();
  $("sessions-status").textContent = "Signed out everywhere else.";
  $("close-sessions").focus();
}

/** A session ended elsewhere (the account channel's `session.revoked`): drop its row. */
export function sessionGone(id) {
  const item = $("session-list").querySelector(`li[data-session="${CSS.escape(id)}"]`);
  if (item) item.remove();
  syncOthers();
}
