"""The page's vendored libraries (``server/web/app/vendor/``, written by
``scripts/vendor_web.py``): offline, the committed files are those its manifest names, of
the versions the script pins, byte for byte (sha256); and the server serves exactly the
manifest's files, packaged with the wheel."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import Live, live_app

ROOT = Path(__file__).resolve().parents[3]
VENDOR = ROOT / "server" / "web" / "app" / "vendor"


def vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_web", ROOT / "scripts" / "vendor_web.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vendor_web"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def manifest() -> dict[str, dict[str, dict[str, str]]]:
    data: dict[str, dict[str, dict[str, str]]] = json.loads((VENDOR / "manifest.json").read_text())
    return data


def test_the_committed_files_match_the_manifest_and_the_pins() -> None:
    script = vendor_script()
    assert script.problems(VENDOR) == []
    files = manifest()["files"]
    for name, entry in files.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == entry["sha256"]
    # Each package's licence travels with it.
    assert {"markdown-it.LICENSE.txt", "highlight.LICENSE.txt"} <= set(files)
    assert "Permission is hereby granted" in (VENDOR / "markdown-it.LICENSE.txt").read_text()
    assert "BSD 3-Clause" in (VENDOR / "highlight.LICENSE.txt").read_text()


def test_a_changed_file_or_a_stray_one_is_reported(tmp_path: Path) -> None:
    script = vendor_script()
    copy = tmp_path / "vendor"
    copy.mkdir()
    for path in VENDOR.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "markdown-it.esm.min.mjs").write_bytes(b"export default () => {};\n")
    (copy / "extra.mjs").write_text("")
    found = script.problems(copy)
    assert any(p.startswith("markdown-it.esm.min.mjs: its sha256 differs") for p in found), found
    assert any(p.startswith("extra.mjs: not in the manifest") for p in found), found


def test_the_integrity_check_takes_only_the_pinned_sha512() -> None:
    script = vendor_script()
    data = b"a tarball"
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert script.check_integrity(data, good)
    assert not script.check_integrity(data + b"!", good)
    assert not script.check_integrity(data, "sha1-" + good[7:])
    for package in script.PACKAGES:
        assert package.integrity.startswith("sha512-")
        assert package.tarball.startswith("https://registry.npmjs.org/")


def test_the_vendor_files_are_packaged() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["server.web"]
    assert "app/vendor/*" in globs


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    db = tmp_path_factory.mktemp("vendor") / "cero.db"
    async with live_app(f"sqlite:///{db}") as running:
        yield running


@pytest.mark.asyncio(loop_scope="module")
async def test_the_server_serves_the_manifest_files_only(live: Live) -> None:
    files = manifest()["files"]
    async with aiohttp.ClientSession() as http:
        for name, kind in [
            ("markdown-it.esm.min.mjs", "text/javascript"),
            ("highlight.min.mjs", "text/javascript"),
            ("highlight.github-dark.min.css", "text/css"),
        ]:
            async with http.get(f"{live.url}/app/vendor/{name}") as r:
                assert r.status == 200
                assert r.content_type == kind
                body = await r.read()
                assert hashlib.sha256(body).hexdigest() == files[name]["sha256"]
                etag = r.headers["ETag"]
                assert etag == f'"{files[name]["sha256"]}"'
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with http.get(
                f"{live.url}/app/vendor/{name}", headers={"If-None-Match": etag}
            ) as r:
                assert r.status == 304
        for missing in [
            "manifest.json",
            "nothing.mjs",
            "..%2Fapp.js",
            "markdown-it.esm.min.mjs.map",
        ]:
            async with http.get(f"{live.url}/app/vendor/{missing}") as r:
                assert r.status == 404, missing
        for module in ["markdown.js", "clipboard.js"]:
            async with http.get(f"{live.url}/app/{module}") as r:
                assert r.status == 200 and r.content_type == "text/javascript"
