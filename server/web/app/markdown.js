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

// body -> {text, refs, full, blocks: [{key, nodes, offset}]}: what it shows. `full`: from a
// parse of the whole text (not of its tail only).
const shown = new WeakMap();

// A block's key: its tokens but their line numbers (a tail parse numbers from its start).
const keyOf = (tokens, refs) => refs + JSON.stringify(tokens, (name, value) => (name === "map" ? undefined : value));

// The top-level blocks of `source` (which starts at `base` in the answer's text): their
// tokens, keys and where each starts in the text.
function blocksOf(source, base, env) {
  const tokens = md.parse(source, env);
  const refs = env.references ? JSON.stringify(env.references) : "";
  const lineStarts = [0];
  for (let i = source.indexOf("\n"); i !== -1; i = source.indexOf("\n", i + 1)) lineStarts.push(i + 1);
  const blocks = [];
  let start = 0;
  let depth = 0;
  tokens.forEach((token, i) => {
    depth += token.nesting;
    if (depth !== 0) return;
    const slice = tokens.slice(start, i + 1);
    const line = slice[0].map ? slice[0].map[0] : null;
    blocks.push({ tokens: slice, key: keyOf(slice, refs), offset: line === null ? null : base + lineStarts[line] });
    start = i + 1;
  });
  return { blocks, refs };
}

/**
 * Render `text` into `body` (an answer's `.body`), redrawing only the blocks that changed.
 * `partial`: the text of an answer still streaming, which mostly grows at its end: while it
 * only grew, the blocks before the last one are final and only the text from the last
 * block's start is parsed again. A render that is not `partial` parses the whole text (a
 * link reference defined at the end changes links above it).
 */
export function renderMarkdown(body, text, partial = false) {
  const old = shown.get(body);
  if (old && old.text === text && (partial || old.full)) return;
  let next = null;
  // (A lone \r is a line break to markdown-it: then the offsets below would not hold.)
  if (partial && old && old.blocks.length > 1 && text.startsWith(old.text) && !text.includes("\r")) {
    const keep = old.blocks.length - 1;
    const from = old.blocks[keep].offset;
    const env = {};
    // Link reference definitions (rare in answers) may change any block: then parse it all.
    if (from !== null && !old.refs) {
      const tail = blocksOf(text.slice(from), from, env);
      if (!tail.refs) next = { blocks: old.blocks.slice(0, keep).concat(tail.blocks), refs: "", env };
    }
  }
  let full = false;
  if (!next) {
    const env = {};
    next = { ...blocksOf(text, 0, env), env };
    full = true;
  }
  if (!old) body.replaceChildren();
  const before = old ? old.blocks : [];
  let same = 0;
  while (same < before.length && same < next.blocks.length && before[same].key === next.blocks[same].key) same += 1;
  for (const block of before.slice(same)) for (const node of block.nodes) node.remove();
  const blocks = before.slice(0, same).map((block, i) => ({ ...block, offset: next.blocks[i].offset }));
  for (const block of next.blocks.slice(same)) {
    const nodes = toNodes(md.renderer.render(block.tokens, md.options, next.env));
    body.append(...nodes);
    blocks.push({ key: block.key, nodes, offset: block.offset });
  }
  shown.set(body, { text, refs: next.refs, env: next.env, full, blocks });
  body.classList.add("md");
}

/** `body` is about to show something other than Markdown (a message of yours, as typed). */
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
