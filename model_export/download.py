"""Robust, resumable, parallel downloader for the pinned PyPI corpus.

The corpus manifest (``corpus_manifest.txt``) lists one ``name==version`` per
line.  Each spec is fetched with ``python -m pip download --no-deps`` into
``<dest>/<normalised-name>-<version>/``.  A wheel for the running interpreter is
preferred (binary wheels still carry the ``.py`` sources); if none exists an
sdist is fetched instead.

A completed download is marked by a ``.done`` file holding the archive file
name.  Downloads are written to a temporary folder that is renamed into place
only after success, so an interrupted run never leaves a half-finished folder
that looks complete; re-running simply skips what is already done.

Usage::

    python -m pathfusion.model_export.download [--manifest P] [--dest data/downloads] [--workers N]

Only the standard library is required; ``tqdm`` is used for the progress bar
when it is importable.

Why one module of ~450 lines: fetching, verifying (pinned versions, hashes, licences) and
unpacking a project are one pipeline step with one resumable state.
"""

from __future__ import annotations

import argparse
import email.message
import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DONE_MARKER",
    "DownloadError",
    "download_all",
    "download_one",
    "is_permissive",
    "license_of",
    "main",
    "normalise_name",
    "parse_spec",
    "read_manifest",
]

#: Name of the marker file written into a completed download folder.
DONE_MARKER = ".done"

#: File name endings recognised as downloaded distribution archives.
ARCHIVE_SUFFIXES: tuple[str, ...] = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar")

#: Default per-pip-call timeout in seconds.
PIP_TIMEOUT_S = 120

DEFAULT_MANIFEST = Path(__file__).resolve().parent / "corpus_manifest.txt"
DEFAULT_DEST = Path("data/downloads")

_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


class DownloadError(RuntimeError):
    """Raised when pip could not download a spec (message holds pip's stderr tail)."""


def normalise_name(name: str) -> str:
    """Return the PEP 503 normalised form of a project name (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a ``name==version`` spec into ``(name, version)``.

    Raises:
        ValueError: if the spec is not an exact ``name==version`` pin.
    """
    m = _SPEC_RE.match(spec.strip())
    if not m:
        raise ValueError(f"not an exact 'name==version' pin: {spec!r}")
    return m.group("name"), m.group("version")


def read_manifest(path: Path) -> list[str]:
    """Read a manifest file and return its specs in file order.

    Blank lines and lines starting with ``#`` are skipped; trailing ``# ...``
    comments are stripped.  Every remaining line must be an exact
    ``name==version`` pin.

    Raises:
        ValueError: on a malformed line or if a (normalised) project name
            appears more than once.
    """
    specs: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            name, version = parse_spec(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
        key = normalise_name(name)
        if key in seen:
            raise ValueError(
                f"{path}:{lineno}: duplicate project name {name!r} (already listed on line {seen[key]})"
            )
        seen[key] = lineno
        specs.append(f"{name}=={version}")
    return specs


def _target_dir(spec: str, dest: Path) -> Path:
    name, version = parse_spec(spec)
    return Path(dest) / f"{normalise_name(name)}-{version}"


def _completed(folder: Path) -> Path | None:
    """Return the archive path if ``folder`` holds a completed download, else None."""
    marker = folder / DONE_MARKER
    if not marker.is_file():
        return None
    archive_name = marker.read_text(encoding="utf-8").strip()
    archive = folder / archive_name
    if archive_name and archive.is_file():
        return archive
    return None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _pip_download(spec: str, into: Path, binary: bool, timeout: float) -> tuple[bool, str]:
    """Run one ``pip download`` call; return ``(ok, stderr_tail)``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--only-binary=:all:" if binary else "--no-binary=:all:",
        "--dest",
        str(into),
        spec,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return False, f"pip timed out after {timeout:.0f}s\n{_tail(err)}"
    if proc.returncode != 0:
        return False, _tail(proc.stderr or proc.stdout or f"pip exited with {proc.returncode}")
    return True, ""


def _archives_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))


def download_one(spec: str, dest: Path, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Download one ``name==version`` spec and return the archive path.

    The archive lands in ``dest/<normalised-name>-<version>/``.  A wheel is
    preferred; an sdist is the fallback.  If the folder already holds a
    completed download (``.done`` marker naming an existing archive) the archive
    is returned immediately without touching the network.

    Raises:
        ValueError: if ``spec`` is not an exact pin.
        DownloadError: if neither a wheel nor an sdist could be downloaded.
    """
    dest = Path(dest)
    target = _target_dir(spec, dest)
    done = _completed(target)
    if done is not None:
        return done

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=dest))
    try:
        errors: list[str] = []
        for binary in (True, False):
            ok, err = _pip_download(spec, tmp, binary=binary, timeout=timeout)
            archives = _archives_in(tmp) if ok else []
            if ok and archives:
                break
            errors.append(f"[{'wheel' if binary else 'sdist'}] {err or 'pip produced no archive'}")
            for leftover in tmp.iterdir():  # clear partial files before the fallback
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        else:
            raise DownloadError(f"{spec}: download failed\n" + "\n".join(errors))

        archive = archives[0]
        (tmp / DONE_MARKER).write_text(archive.name + "\n", encoding="utf-8")
        if target.exists():  # stale, incomplete folder from an older run
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            # Another worker may have finished the same spec concurrently.
            done = _completed(target)
            if done is not None:
                return done
            raise
        return target / archive.name
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _Progress:
    """tqdm progress bar if available, otherwise a minimal stderr counter."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.count = 0
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="pkg", desc="download")
            except ImportError:
                self._bar = None

    def update(self, label: str, failed: bool) -> None:
        with self._lock:
            self.count += 1
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(1)
                if failed:
                    self._bar.write(f"FAILED {label}")
            else:
                flag = " FAILED" if failed else ""
                print(f"[{self.count}/{self.total}] {label}{flag}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def download_all(
    specs: Iterable[str],
    dest: Path,
    workers: int = 8,
    progress: bool = True,
    timeout: float = PIP_TIMEOUT_S,
) -> dict[str, Path | str]:
    """Download every spec in parallel with a thread pool.

    Returns a mapping ``spec -> archive Path`` for successes and
    ``spec -> error string`` for failures.  One failure never aborts the run.
    """
    spec_list = list(specs)
    results: dict[str, Path | str] = {}
    bar = _Progress(len(spec_list), progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(download_one, s, Path(dest), timeout): s for s in spec_list}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    results[spec] = fut.result()
                    bar.update(spec, failed=False)
                except Exception as exc:
                    results[spec] = f"{type(exc).__name__}: {exc}"
                    bar.update(spec, failed=True)
    finally:
        bar.close()
    return {s: results[s] for s in spec_list if s in results}


def _read_members(archive: Path, wanted: Sequence[str]) -> str | None:
    """Return the text of the first archive member whose path ends with one of ``wanted``."""
    archive = Path(archive)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            names = sorted(zf.namelist(), key=lambda n: n.count("/"))
            for suffix in wanted:
                for n in names:
                    if n == suffix or n.endswith("/" + suffix):
                        return zf.read(n).decode("utf-8", errors="replace")
        return None
    with tarfile.open(archive) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name.count("/"))
        for suffix in wanted:
            for m in members:
                if m.name == suffix or m.name.endswith("/" + suffix):
                    fh = tf.extractfile(m)
                    return fh.read().decode("utf-8", errors="replace") if fh else None
    return None


def _metadata_text(archive: Path) -> str:
    """Return the raw core-metadata text (METADATA / PKG-INFO) of an archive."""
    archive = Path(archive)
    name = archive.name
    if name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            cands = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if not cands:
                raise ValueError(f"{archive}: no .dist-info/METADATA in wheel")
            return zf.read(cands[0]).decode("utf-8", errors="replace")
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            cands = sorted((n for n in zf.namelist() if n.endswith("PKG-INFO")), key=lambda n: n.count("/"))
            if not cands:
                raise ValueError(f"{archive}: no PKG-INFO in sdist")
            return zf.read(cands[0]).decode("utf-8", errors="replace")
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as tf:
            best = None
            for member in tf:  # streams headers; stops at the shallowest PKG-INFO
                if member.isfile() and member.name.endswith("PKG-INFO"):
                    if best is None or member.name.count("/") < best.name.count("/"):
                        best = member
                    if best.name.count("/") <= 1:
                        break
            if best is None:
                raise ValueError(f"{archive}: no PKG-INFO in sdist")
            fh = tf.extractfile(best)
            assert fh is not None
            return fh.read().decode("utf-8", errors="replace")
    raise ValueError(f"{archive}: unsupported archive type")


#: (regex over a licence file's text, SPDX-ish name), most specific first.
_LICENSE_TEXT_SIGNATURES: tuple[tuple[str, str], ...] = (
    (r"GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL"),
    (r"GNU LESSER GENERAL PUBLIC LICENSE|GNU LIBRARY GENERAL PUBLIC LICENSE", "LGPL"),
    (r"GNU GENERAL PUBLIC LICENSE", "GPL"),
    (r"Mozilla Public License,? (Version|v\.?) ?2\.0", "MPL-2.0"),
    (r"Apache License,?\s+Version 2\.0", "Apache-2.0"),
    (r"Permission is hereby granted, free of charge", "MIT"),
    (r"Redistribution and use in source and binary forms", "BSD"),
    (r"Permission to use, copy, modify, and/or distribute this software", "ISC"),
    (r"PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"),
    (r"This is free and unencumbered software released into the public domain", "Unlicense"),
)


def _license_from_files(archive: Path, msg: email.message.Message) -> str | None:
    """Guess the licence from the ``License-File`` members named in the metadata."""
    files = [f.strip() for f in msg.get_all("License-File") or [] if f.strip()]
    files += ["LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "COPYING"]
    for f in files:
        text = _read_members(archive, [f"licenses/{f}", f])
        if not text:
            continue
        for pattern, spdx in _LICENSE_TEXT_SIGNATURES:
            if re.search(pattern, text, re.I):
                return f"{spdx} (from {f} text)"
    return None


def _one_line(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def license_of(archive: Path) -> str:
    """Return a one-line licence description read from an archive's metadata.

    Reads only the ``METADATA`` (wheel) or ``PKG-INFO`` (sdist) member.  The
    result combines ``License-Expression`` (if present), the ``License`` field
    (first line, shortened; some projects paste the full text there) and any
    ``License ::`` trove classifiers, joined by `` | ``.  If the metadata has
    none of these, the licence files it names (``License-File``; PEP 639) are
    read and matched against well-known licence texts, giving e.g.
    ``"MIT (from LICENSE text)"``.  Returns ``"UNKNOWN"`` if nothing matches.  The string never contains tabs or newlines.
    """
    msg = email.parser.Parser().parsestr(_metadata_text(archive), headersonly=True)
    parts: list[str] = []
    expr = msg.get("License-Expression")
    if expr and expr.strip():
        parts.append(_one_line(expr))
    lic = msg.get("License")
    if lic and lic.strip() and lic.strip().upper() != "UNKNOWN":
        first = lic.strip().splitlines()[0]
        parts.append(_one_line(first, 80))
    for classifier in msg.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            parts.append(_one_line(classifier.replace("License :: ", "").replace("OSI Approved :: ", "")))
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    if seen:
        return " | ".join(seen)
    return _license_from_files(archive, msg) or "UNKNOWN"


_COPYLEFT = re.compile(r"\b(A?GPL|LGPL|GNU|General Public|Affero|copyleft|SSPL|EUPL|CC-BY-NC|Commons Clause)", re.I)
_PERMISSIVE = re.compile(
    r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|MPL|Mozilla Public License 2|"
    r"Unlicense|Zope Public|ZPL|HPND|Historical Permission|0BSD|CC0|Public Domain|zlib|Expat)",
    re.I,
)


def is_permissive(licence: str) -> bool:
    """Heuristic: True if a :func:`license_of` string names a permissive licence and no copyleft one."""
    return bool(_PERMISSIVE.search(licence)) and not _COPYLEFT.search(licence)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code.

    Exit code is 0 unless more than 10% of the specs failed to download.
    """
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.download", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest of name==version pins")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="download folder (default data/downloads)")
    parser.add_argument("--workers", type=int, default=8, help="parallel pip processes (default 8)")
    parser.add_argument("--timeout", type=float, default=PIP_TIMEOUT_S, help="seconds per pip call")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress display")
    args = parser.parse_args(argv)

    specs = read_manifest(args.manifest)
    results = download_all(specs, args.dest, workers=args.workers, progress=not args.no_progress, timeout=args.timeout)
    ok = {s: r for s, r in results.items() if isinstance(r, Path)}
    failed = {s: r for s, r in results.items() if not isinstance(r, Path)}
    sdists = sum(1 for p in ok.values() if not p.name.endswith(".whl"))
    print(f"downloaded: {len(ok)}/{len(specs)} ({sdists} sdists) into {args.dest}")
    if failed:
        print(f"failed: {len(failed)}")
        for spec, err in sorted(failed.items()):
            first = err.strip().splitlines()
            print(f"  {spec}: {first[-1] if first else err}")
    return 1 if specs and len(failed) > 0.10 * len(specs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
