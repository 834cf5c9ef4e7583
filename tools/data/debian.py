"""Fetching Debian packages as plain files (``apt-get download`` + ``dpkg -x``; nothing is installed).

The cache layout is ``{cache_dir}/{pkg}_{version}_{arch}.deb`` and
``{cache_dir}/extracted/{pkg}_{version}/`` (the package's file tree). Both are reused on later runs.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["DebianCopyright", "ExtractedPackage", "PackageFetchError", "fetch_debian_package", "read_copyright"]


class PackageFetchError(RuntimeError):
    """``apt-get download`` / ``dpkg -x`` could not provide a package."""


@dataclass(frozen=True)
class DebianCopyright:
    """The machine-readable (DEP-5) ``copyright`` file of a package, reduced to file patterns -> licence."""

    path: str
    default_license: str
    rules: list[tuple[list[str], str]] = field(default_factory=list)  # (Files patterns, License), file order

    def license_for(self, source_path: str) -> str:
        """Licence of one file given its path in the UPSTREAM source tree (``nature/Aqua.jpg``).

        The last ``Files:`` paragraph with a matching pattern wins (DEP-5; ``*`` also matches ``/``).
        """
        source_path = source_path.lstrip("/")
        found = self.default_license
        for patterns, license_name in self.rules:
            if any(fnmatch.fnmatchcase(source_path, pattern) for pattern in patterns):
                found = license_name
        return found


def read_copyright(path: str | os.PathLike) -> DebianCopyright:
    """Parse a Debian ``copyright`` file. Non-DEP-5 files give their first ``License:`` line (or 'unknown')."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    rules: list[tuple[list[str], str]] = []
    first_license = None
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        license_name = fields.get("license", "").split("\n")[0].strip()
        if license_name and first_license is None:
            first_license = license_name
        if "files" in fields and license_name:
            patterns = [p for p in fields["files"].split() if p and not p.startswith("debian/")]
            if patterns:
                rules.append((patterns, license_name))
    default = next((lic for pats, lic in rules if "*" in pats), first_license or "unknown")
    return DebianCopyright(path=str(path), default_license=default, rules=rules)


@dataclass(frozen=True)
class ExtractedPackage:
    """A Debian package unpacked into the cache."""

    name: str
    version: str
    deb_path: Path
    root: Path  # the package's file tree: root / "usr/share/..."

    @property
    def copyright_path(self) -> Path:
        return self.root / "usr" / "share" / "doc" / self.name / "copyright"

    def copyright(self) -> DebianCopyright:
        if not self.copyright_path.is_file():
            raise FileNotFoundError(f"package {self.name!r} has no copyright file at {self.copyright_path}")
        return read_copyright(self.copyright_path)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise PackageFetchError(f"{cmd[0]!r} is not available on this machine ({e}); a Debian/Ubuntu system is needed") from e


def _deb_version(deb: Path) -> str:
    out = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if out.returncode != 0 or not out.stdout.strip():
        raise PackageFetchError(f"cannot read the version of {deb}: {out.stderr.strip()}")
    return out.stdout.strip()


def _download(package: str, deb_dir: Path) -> Path:
    deb_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for attempt in ("download", "update+download"):
        if attempt == "update+download":
            logger.info("apt-get download %s failed; running apt-get update once", package)
            update = _run(["apt-get", "update"])
            if update.returncode != 0:
                errors.append(f"apt-get update: {update.stderr.strip()[-500:]}")
        out = _run(["apt-get", "download", package], cwd=deb_dir)
        found = sorted(deb_dir.glob(f"{package}_*.deb"))
        if out.returncode == 0 and found:
            return found[-1]
        errors.append(f"apt-get download {package}: {out.stderr.strip()[-500:]}")
    raise PackageFetchError(f"could not download Debian package {package!r}:\n" + "\n".join(errors))


def fetch_debian_package(package: str, cache_dir: str | os.PathLike) -> ExtractedPackage:
    """Download (once) and unpack (once) ``package`` under ``cache_dir``; return where its files are."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
        raise ValueError(f"not a Debian package name: {package!r}")
    cache_dir = Path(cache_dir)
    deb_dir = cache_dir
    existing = sorted(deb_dir.glob(f"{package}_*.deb"))
    deb = existing[-1] if existing else _download(package, deb_dir)
    version = _deb_version(deb)
    root = cache_dir / "extracted" / f"{package}_{version}"
    if not (root / ".complete").is_file():
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        out = _run(["dpkg", "-x", str(deb), str(tmp)])
        if out.returncode != 0:
            raise PackageFetchError(f"dpkg -x {deb} failed: {out.stderr.strip()}")
        (tmp / ".complete").write_text(version + "\n")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        logger.info("extracted %s %s to %s", package, version, root)
    return ExtractedPackage(name=package, version=version, deb_path=deb, root=root)
