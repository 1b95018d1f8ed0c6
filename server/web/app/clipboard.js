// Cero web app: the clipboard, for the Copy buttons (a message's, in branches.js; a code
// block's, in markdown.js).

import { el } from "./dom.js";

/** Put `text` on the clipboard; false when nothing could (the caller offers a selection). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No Clipboard API here (an insecure origin, a denied permission): the old way.
  }
  const area = el("textarea", { class: "sr-only", readonly: "", "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  let done = false;
  try {
    done = document.execCommand("copy");
  } catch {
    done = false;
  }
  area.remove();
  return done;
}

/** Select the contents of `node`, for the reader to copy by hand. */
export function selectContents(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}
