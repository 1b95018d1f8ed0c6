"""The ``Examples:`` block at the end of each command's ``--help`` (argparse ``epilog``,
printed as written by ``RawDescriptionHelpFormatter``)."""

from __future__ import annotations

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "login": [
        ("cero login", "prints a code, opens the browser to approve it"),
        ("cero login --no-browser", "on a server over SSH: open the URL yourself"),
        ("cero --server 127.0.0.1:3201 login", "another server (http:// for this machine)"),
    ],
    "logout": [("cero logout", "revoke this terminal's session and forget the token")],
    "whoami": [("cero whoami", ""), ("cero whoami --json", "the server's JSON")],
    "chat": [
        ('cero chat "explain SSE in one line"', "a new conversation; the answer streams"),
        ("cero chat", "on a terminal: the interactive mode (or cero chat -i)"),
        ("cero chat -i --no-history", "Up/Down, Ctrl-R: this session's lines only, no file"),
        ('cero chat -c "and then?"', "continue your most recent conversation"),
        ('cero chat --continue "and then?"', "the same (-C)"),
        ('cero chat -c ID "and then?"', "continue conversation ID"),
        ("git diff | cero chat - -m demo", "the message from stdin, a chosen model"),
        ('cero chat "find sources" -t google_search --json', "events as NDJSON"),
        ('cero chat "what does it show?" -a chart.png', "a file with the message"),
        ('cero chat "compare them" -a a.pdf -a notes.md', "up to 10 files"),
        ('cero chat -d "write a long essay"', "Ctrl-C leaves it running: cero watch ID"),
    ],
    "watch": [
        ("cero watch ID", "its last messages, then live (Ctrl-C stops)"),
        ("cero watch ID --once --history 0", "only the next answer, then exit"),
        ("cero watch --account", "conversations created/renamed/deleted, answers, sessions"),
        ("cero watch --account --json", "the account's events as NDJSON"),
    ],
    "conversations": [
        ("cero conversations", "id, last update, title; newest first"),
        ("cero conversations --limit 100 --json", ""),
    ],
    "messages": [("cero messages ID", "the active branch"), ("cero messages ID --json", "")],
    "cancel": [("cero cancel ID", "stop the answer being generated (Ctrl-C in chat does it)")],
    "models": [("cero models", "ids for --model"), ("cero models --json", "")],
    "rename": [('cero rename ID "Trip to Lisbon"', "")],
    "delete": [
        ("cero delete ID", "asks first"),
        ("cero delete ID --yes", "in a script (required when stdin is not a terminal)"),
    ],
    "branches": [("cero branches ID", "the whole tree, * on the active branch")],
    "regenerate": [
        ("cero regenerate ID", "answer your last message again"),
        ("cero regenerate ID -m demo", "with another model"),
    ],
    "edit": [('cero edit ID MESSAGE_ID "new text"', "a new branch from an edited message")],
    "continue": [("cero continue ID", "carry on an answer that was cut off or cancelled")],
    "switch": [("cero switch ID MESSAGE_ID", "make that message's branch the active one")],
    "export": [
        ("cero export ID -o chat.json", "one conversation, every branch"),
        ("cero export --format markdown > all.md", "every conversation, readable"),
    ],
    "import": [("cero import chat.json", "new conversations from an export file")],
    "instructions": [
        ('cero instructions --set "I am a botanist; use metric units."', "for every answer"),
        ('cero instructions -c ID --set "Answer in French."', "one conversation's own"),
        ("cero instructions --clear", ""),
    ],
    "search": [('cero search "oak tree"', "messages and titles holding every word")],
    "completion": [
        ('eval "$(cero completion bash)"', "in ~/.bashrc"),
        ('eval "$(cero completion zsh)"', "in ~/.zshrc"),
        ("cero completion fish > ~/.config/fish/completions/cero.fish", ""),
    ],
}


def epilog(command: str) -> str | None:
    """The examples of ``command`` as an epilog, or ``None``."""
    rows = EXAMPLES.get(command)
    if not rows:
        return None
    width = max(len(example) for example, _ in rows)
    lines = ["examples:"]
    for example, note in rows:
        lines.append(f"  {example.ljust(width)}  # {note}" if note else f"  {example}")
    return "\n".join(lines)
