// Cero web app: an answer's Markdown, rendered with markdown-it and highlight.js (vendored
// in ./vendor/ by scripts/vendor_web.py; docs/web-app.md).
//
// Safety: markdown-it runs with `html: false`, so any HTML in the model's text is escaped
// into text, and links are kept only for http(s) and mailto URLs (`validateLink`); images
// are off. Its output (and highlight.js's, which escapes the code) is the only HTML this
// page parses, in an inert <template>; the links are checked again on the DOM.
//
// Streaming: `renderMarkdown(body, text)` re-renders only what changed. The text is parsed
// whole (cheap), its top-level blocks are keyed by their tokens, and the blocks whose key is
// unchanged keep their DOM nodes: while an answer streams only its last block is redrawn
// (no flicker, a selection in an earlier block survives, code is highlighted once). The
// renderer's output for a block depends on nothing but its tokens (and the document's
// link references, part of every key), so the nodes always equal a full render of `text`.

import { copyText, selectContents } from "./clipboard.js";
import { el } from "./dom.js";
import hljs from "./vendor/highlight.min.mjs";
import dockerfile from "./vendor/highlight.dockerfile.min.mjs";
import nginx from "./vendor/highlight.nginx.min.mjs";
import powershell from "./vendor/highlight.powershell.min.mjs";
import markdownit from "./vendor/markdown-it.esm.min.mjs";

hljs.registerLanguage("dockerfile", dockerfile);
hljs.registerLanguage("nginx", nginx);
hljs.registerLanguage("powershell", powershell);

const LINK = /^(?:https?:|mailto:)/i;
const ALIGN = /^text-align:(left|right|center)$/;

function highlight(code, lang) {
  const language = (lang || "").toLowerCase();
  if (!language || !hljs.getLanguage(language)) return ""; // markdown-it escapes it as is
  try {
    return hljs.highlight(code, { language, ignoreIllegals: true }).value;
  } catch {
    return "";
  }
}

const md = markdownit({ html: false, linkify: true, breaks: true, highlight });
md.disable(["image"]); // no request to anywhere a model names
md.linkify.set({ fuzzyLink: false, fuzzyEmail: false }); // bare URLs only with their scheme
md.validateLink = (url) => LINK.test(url.trim());

// Links open in a new tab without a referrer or a handle on this page; a table's column
// alignment becomes a class (the CSP allows no inline style).
md.core.ruler.push("cero_attrs", (state) => {
  const walk = (tokens) => {
    for (const token of tokens) {
      if (token.type === "link_open") {
        token.attrSet("target", "_blank");
        token.attrSet("rel", "noopener noreferrer");
      } else if (token.type === "th_open" || token.type === "td_open") {
        const align = ALIGN.exec(token.attrGet("style") || "");
        if (token.attrs) token.attrs = token.attrs.filter(([name]) => name !== "style");
        if (align) token.attrJoin("class", `align-${align[1]}`);
      }
      if (token.children) walk(token.children);
    }
  };
  walk(state.tokens);
});

// body -> [{key, nodes}] of the blocks it shows.
const shown = new WeakMap();

/** Render `text` into `body` (an answer's `.body`), redrawing only the blocks that changed. */
export function renderMarkdown(body, text) {
  const env = {};
  const tokens = md.parse(text, env);
  const refs = env.references ? JSON.stringify(env.references) : "";
  const blocks = [];
  let start = 0;
  let depth = 0;
  tokens.forEach((token, i) => {
    depth += token.nesting;
    if (depth === 0) {
      const slice = tokens.slice(start, i + 1);
      blocks.push({ tokens: slice, key: refs + JSON.stringify(slice) });
      start = i + 1;
    }
  });
  const old = shown.get(body);
  if (!old) body.replaceChildren();
  const before = old || [];
  let same = 0;
  while (same < before.length && same < blocks.length && before[same].key === blocks[same].key) same += 1;
  for (const block of before.slice(same)) for (const node of block.nodes) node.remove();
  const kept = before.slice(0, same);
  for (const block of blocks.slice(same)) {
    const nodes = toNodes(md.renderer.render(block.tokens, md.options, env));
    body.append(...nodes);
    kept.push({ key: block.key, nodes });
  }
  shown.set(body, kept);
  body.classList.add("md");
}

/** `body` is about to show something else than Markdown (plain text, a user message). */
export function forgetMarkdown(body) {
  shown.delete(body);
  body.classList.remove("md");
}

// markdown-it's escaped HTML to nodes: parsed in an inert template (nothing loads or runs),
// then checked and dressed (links, code blocks).
function toNodes(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  const root = template.content;
  for (const a of root.querySelectorAll("a")) {
    const href = a.getAttribute("href") || "";
    if (!LINK.test(href.trim())) a.replaceWith(...a.childNodes);
  }
  for (const pre of root.querySelectorAll("pre")) codeBlock(pre);
  // Not the newlines between blocks: the text shown is the answer's, and only grows.
  return Array.from(root.childNodes).filter((node) => node.nodeType !== Node.TEXT_NODE || node.data.trim());
}

// A fenced block: its language shown, highlight.js's classes styled, and a Copy button.
function codeBlock(pre) {
  const code = pre.querySelector("code");
  if (!code) return;
  const lang = /(?:^|\s)language-(\S+)/.exec(code.className);
  code.classList.add("hljs");
  const label = lang ? `Copy ${lang[1]} code` : "Copy code";
  const button = el("button", { type: "button", class: "ghost code-copy", "aria-label": label, title: label });
  const box = el("div", { class: "code-block" });
  if (lang) box.dataset.lang = lang[1];
  pre.replaceWith(box);
  box.append(pre, button);
  button.addEventListener("click", async () => {
    const done = await copyText(code.textContent.replace(/\n$/, ""));
    if (!done) selectContents(code);
    button.dataset.copied = done ? "true" : "select";
    clearTimeout(button.copyTimer);
    button.copyTimer = setTimeout(() => delete button.dataset.copied, 2000);
  });
}
