"""Offline tests for pathfusion.model_export.download (no network access needed)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from pathfusion.model_export import download as dl


def test_read_manifest_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text(
        "# header comment\n\nrequests==2.32.3\n   \n# another\nFlask==3.0.0  # trailing comment\nzope.interface==7.0\n",
        encoding="utf-8",
    )
    assert dl.read_manifest(manifest) == ["requests==2.32.3", "Flask==3.0.0", "zope.interface==7.0"]


def test_read_manifest_rejects_duplicate_names(tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("typing_extensions==4.0.0\nclick==8.0\nTyping-Extensions==4.1.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        dl.read_manifest(manifest)


def test_read_manifest_rejects_unpinned(tmp_path: Path) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text("requests>=2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="name==version"):
        dl.read_manifest(manifest)


def test_normalise_name() -> None:
    assert dl.normalise_name("Zope.Interface") == "zope-interface"
    assert dl.normalise_name("typing__extensions") == "typing-extensions"


def _fail_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("subprocess.run must not be called for a completed download")


def test_download_one_is_resumable_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-pkg-1.0"
    folder.mkdir()
    archive = folder / "my_pkg-1.0-py3-none-any.whl"
    archive.write_bytes(b"not really a wheel")
    (folder / dl.DONE_MARKER).write_text(archive.name + "\n", encoding="utf-8")
    monkeypatch.setattr(subprocess, "run", _fail_run)
    monkeypatch.setattr(dl.subprocess, "run", _fail_run)
    assert dl.download_one("My_Pkg==1.0", tmp_path) == archive


def test_download_all_collects_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = tmp_path / "good-1.0"
    done.mkdir()
    (done / "good-1.0.tar.gz").write_bytes(b"x")
    (done / dl.DONE_MARKER).write_text("good-1.0.tar.gz", encoding="utf-8")

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for bad==9.9")

    monkeypatch.setattr(dl.subprocess, "run", fake_run)
    res = dl.download_all(["good==1.0", "bad==9.9"], tmp_path, workers=2, progress=False)
    assert res["good==1.0"] == done / "good-1.0.tar.gz"
    assert isinstance(res["bad==9.9"], str) and "No matching distribution" in res["bad==9.9"]
    assert not (tmp_path / "bad-9.9").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_download_one_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "boom: network unreachable")

    monkeypatch.setattr(dl.subprocess, "run", fake_run)
    with pytest.raises(dl.DownloadError, match="network unreachable"):
        dl.download_one("nothing==1.0", tmp_path)


_METADATA = (
    "Metadata-Version: 2.1\n"
    "Name: tiny\n"
    "Version: 0.1\n"
    "License: BSD-3-Clause\n"
    "Classifier: Programming Language :: Python :: 3\n"
    "Classifier: License :: OSI Approved :: BSD License\n"
    "\n"
    "Long description mentioning GPL that must be ignored.\n"
)


def test_license_of_wheel(tmp_path: Path) -> None:
    whl = tmp_path / "tiny-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("tiny/__init__.py", "x = 1\n")
        zf.writestr("tiny-0.1.dist-info/METADATA", _METADATA)
    lic = dl.license_of(whl)
    assert lic == "BSD-3-Clause | BSD License"
    assert dl.is_permissive(lic)


def test_license_of_sdist_license_expression(tmp_path: Path) -> None:
    sdist = tmp_path / "tiny-0.1.tar.gz"
    pkg_info = b"Metadata-Version: 2.4\nName: tiny\nVersion: 0.1\nLicense-Expression: GPL-3.0-or-later\n"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, data in [("tiny-0.1/tiny/PKG-INFO", b"Name: nested\nLicense: MIT\n"), ("tiny-0.1/PKG-INFO", pkg_info)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    lic = dl.license_of(sdist)
    assert lic == "GPL-3.0-or-later"
    assert not dl.is_permissive(lic)


def test_license_of_unknown(tmp_path: Path) -> None:
    whl = tmp_path / "x-1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("x-1.dist-info/METADATA", "Metadata-Version: 2.1\nName: x\nVersion: 1\nLicense: UNKNOWN\n")
    assert dl.license_of(whl) == "UNKNOWN"


def test_license_of_falls_back_to_license_file(tmp_path: Path) -> None:
    whl = tmp_path / "y-1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("y-1.dist-info/METADATA", "Metadata-Version: 2.4\nName: y\nVersion: 1\nLicense-File: LICENSE\n")
        zf.writestr(
            "y-1.dist-info/licenses/LICENSE",
            "Copyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person ...\n",
        )
    lic = dl.license_of(whl)
    assert lic == "MIT (from LICENSE text)"
    assert dl.is_permissive(lic)
