"""Vendor the web page's two libraries into ``server/web/app/vendor/`` (stdlib only).

The page (``/app``) renders answers with markdown-it and highlights code with highlight.js.
Both are committed as files taken verbatim from their published npm packages, so the
server needs no CDN and no build step at run time. This script is how they got there:

* each package's tarball is downloaded from the npm registry at the version pinned in
  :data:`PACKAGES`, and checked against the ``dist.integrity`` (sha512) pinned beside it:
  a tarball that differs is refused, nothing is written;
* only the browser builds the page loads, and each package's licence, are extracted;
* ``manifest.json`` records the versions, where each file came from and its sha256.

``python scripts/vendor_web.py`` (re)writes the folder; ``--check`` (offline) verifies the
committed files against the manifest, as ``tests/server/web/test_vendor.py`` does. To
upgrade: change a version, put the registry's new ``dist.integrity`` beside it
(``npm view PACKAGE@VERSION dist.integrity``), run the script, run the browser tests.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parents[1] / "server" / "web" / "app" / "vendor"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity: "sha512-<base64>"
    licence: str  # its SPDX licence id, as package.json says
    files: dict[str, str]  # vendored file name -> path inside the tarball

    @property
    def tarball(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = (
    Package(
        name="markdown-it",
        version="15.0.3",
        integrity=(
            "sha512-+Az7Ojz3iRGu8KYMvJ6xVhvrxP3eE+vEtJX75Ow88XBpcQNV/0lGX5ZynIIBftREo4DC2jsveAMDaeltmm8QvQ=="
        ),
        licence="MIT",
        files={
            "markdown-it.esm.min.mjs": "package/dist/browser/markdown-it.esm.min.mjs",
            "markdown-it.LICENSE.txt": "package/LICENSE",
        },
    ),
    Package(
        name="@highlightjs/cdn-assets",
        version="11.12.0",
        integrity=(
            "sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH0zgiNDEGjpDw=="
        ),
        licence="BSD-3-Clause",
        files={
            # The ES-module build with the "common" languages (36, python to yaml) ...
            "highlight.min.mjs": "package/es/highlight.min.js",
            # ... and a few more that answers often hold.
            "highlight.dockerfile.min.mjs": "package/es/languages/dockerfile.min.js",
            "highlight.powershell.min.mjs": "package/es/languages/powershell.min.js",
            "highlight.nginx.min.mjs": "package/es/languages/nginx.min.js",
            # The page's light and dark schemes.
            "highlight.github.min.css": "package/styles/github.min.css",
            "highlight.github-dark.min.css": "package/styles/github-dark.min.css",
            "highlight.LICENSE.txt": "package/LICENSE",
        },
    ),
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_integrity(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        return False
    return base64.b64encode(hashlib.sha512(data).digest()).decode() == expected


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https, pinned host)
        data: bytes = response.read()
    return data


def extract(package: Package, tarball: bytes) -> dict[str, bytes]:
    """The vendored files of ``package`` from its (verified) tarball."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name, member_path in package.files.items():
            member = archive.getmember(member_path)
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                raise SystemExit(f"{package.name}: {member_path} is not a file in the tarball")
            out[name] = handle.read()
    return out


def vendor(folder: Path) -> dict[str, object]:
    """Download, verify and write every package's files and the manifest; the manifest."""
    files: dict[str, bytes] = {}
    manifest: dict[str, object] = {"packages": {}, "files": {}}
    packages: dict[str, object] = {}
    entries: dict[str, object] = {}
    for package in PACKAGES:
        tarball = download(package.tarball)
        if not check_integrity(tarball, package.integrity):
            raise SystemExit(
                f"{package.name}@{package.version}: the tarball fails its pinned integrity"
            )
        for name, data in extract(package, tarball).items():
            files[name] = data
            entries[name] = {
                "package": package.name,
                "from": package.files[name],
                "sha256": sha256(data),
                "bytes": len(data),
            }
        packages[package.name] = {
            "version": package.version,
            "licence": package.licence,
            "tarball": package.tarball,
            "integrity": package.integrity,
        }
    manifest["packages"] = packages
    manifest["files"] = dict(sorted(entries.items()))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in files and stale.name != MANIFEST:
            stale.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def problems(folder: Path = VENDOR) -> list[str]:
    """What differs between ``folder`` and its manifest, and between the manifest and the
    pins above (offline; empty when all is well)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST}: {exc}"]
    found: list[str] = []
    entries: dict[str, dict[str, object]] = manifest.get("files", {})
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            found.append(f"{name}: listed in the manifest, missing")
        elif sha256(path.read_bytes()) != entry.get("sha256"):
            found.append(f"{name}: its sha256 differs from the manifest's")
    for path in folder.iterdir():
        if path.name != MANIFEST and path.name not in entries:
            found.append(f"{path.name}: not in the manifest")
    packages: dict[str, dict[str, object]] = manifest.get("packages", {})
    for package in PACKAGES:
        pinned = packages.get(package.name, {})
        if (pinned.get("version"), pinned.get("integrity")) != (package.version, package.integrity):
            found.append(
                f"{package.name}: the manifest is not of the pinned version (run the script)"
            )
        for name, member in package.files.items():
            if entries.get(name, {}).get("from") != member:
                found.append(f"{name}: the manifest does not say it came from {member}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="verify the files offline")
    parser.add_argument("--dir", type=Path, default=VENDOR, help="the vendor folder")
    args = parser.parse_args(argv)
    if not args.check:
        manifest = vendor(args.dir)
        print(json.dumps(manifest["packages"], indent=2))  # noqa: T201 (a command-line tool)
    found = problems(args.dir)
    for problem in found:
        print(problem, file=sys.stderr)  # noqa: T201
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
