"""Stand-ins that speak real wire formats over HTTP (never mocks of our modules): the
Gemini REST API (``python -m standins.gemini``) and GitHub's OAuth and user API.

Shared by ``tests/`` and ``bench/``; nothing the server ships imports it (an import-linter
contract in pyproject.toml).
"""
