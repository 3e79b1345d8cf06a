"""models/records.py: folder fingerprints and file URIs (publishing and stamps: tests/models/test_storage.py)."""

from __future__ import annotations

import pytest

from models.records import META_FILES, STAMP, fingerprint_dir, local_path


def make_output(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


FILES = {"config.json": b'{"a": 1}', "weights.bin": b"\x00\x01\x02", "sub/tokenizer.json": b"{}"}


def test_fingerprint_is_content_based(tmp_path):
    one = make_output(tmp_path / "one", FILES)
    two = make_output(tmp_path / "two", FILES)  # same files elsewhere
    assert fingerprint_dir(one) == fingerprint_dir(two)
    assert len(fingerprint_dir(one)) == 16
    assert int(fingerprint_dir(one), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        lambda d: (d / "weights.bin").write_bytes(b"\x00\x01\x03"),  # content changes
        lambda d: (d / "sub" / "tokenizer.json").write_text("{ }"),  # nested file changes
        lambda d: (d / "extra.txt").write_text(""),  # empty file added
        lambda d: (d / "config.json").unlink(),  # file removed
        lambda d: (d / "config.json").rename(d / "config2.json"),  # file renamed
    ],
)
def test_fingerprint_changes_with_files(tmp_path, change):
    folder = make_output(tmp_path / "out", FILES)
    before = fingerprint_dir(folder)
    change(folder)
    assert fingerprint_dir(folder) != before


def test_fingerprint_ignores_files_about_the_output(tmp_path):
    folder = make_output(tmp_path / "out", FILES)
    before = fingerprint_dir(folder)
    assert {STAMP, "build_info.json", "spec.json"} == META_FILES
    (folder / STAMP).write_text('{"anything": 1}')
    (folder / "build_info.json").write_text('{"host": "x"}')
    (folder / "spec.json").write_text('{"mlflow_run_id": "any"}')
    (folder / "empty_dir").mkdir()
    assert fingerprint_dir(folder) == before


def test_fingerprint_separates_names_from_contents(tmp_path):
    one = make_output(tmp_path / "one", {"a": b"bc"})
    two = make_output(tmp_path / "two", {"ab": b"c"})
    assert fingerprint_dir(one) != fingerprint_dir(two)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("file:///data/out", "/data/out"), ("/data/out", "/data/out"), ("rel/out", "rel/out")],
)
def test_local_path(uri, expected):
    assert local_path(uri).as_posix() == expected
