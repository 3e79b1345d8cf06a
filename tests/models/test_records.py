"""models/records.py: folder fingerprints, `.partial` work folders, publishing and stamps."""

from __future__ import annotations

import pytest

from models.records import STAMP, Artifact, fingerprint_dir, local_path, partial_dir, publish

RECORD = {"stage": "cold_start_sft", "kind": "model", "mlflow_run_id": "run-123"}


def stamp_of(folder) -> Artifact:
    """The record written beside a published output."""
    return Artifact.model_validate_json((folder / STAMP).read_text())


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


def test_fingerprint_ignores_stamp_and_build_info(tmp_path):
    folder = make_output(tmp_path / "out", FILES)
    before = fingerprint_dir(folder)
    (folder / STAMP).write_text('{"anything": 1}')
    (folder / "build_info.json").write_text('{"host": "x"}')
    (folder / "empty_dir").mkdir()
    assert fingerprint_dir(folder) == before


def test_fingerprint_separates_names_from_contents(tmp_path):
    one = make_output(tmp_path / "one", {"a": b"bc"})
    two = make_output(tmp_path / "two", {"ab": b"c"})
    assert fingerprint_dir(one) != fingerprint_dir(two)


def test_partial_dir_is_fresh_and_beside_final(tmp_path):
    final = tmp_path / "artifacts" / "cold_start_sft-abc"
    work = partial_dir(final)
    assert work == tmp_path / "artifacts" / "cold_start_sft-abc.partial"
    assert work.is_dir() and list(work.iterdir()) == []
    (work / "stale.bin").write_bytes(b"half written")
    (work / "deep").mkdir()
    (work / "deep" / "x").write_text("x")
    again = partial_dir(final)
    assert again == work
    assert list(again.iterdir()) == []
    assert not final.exists()


def test_publish_moves_partial_into_place_and_stamps(tmp_path):
    final = tmp_path / "cold_start_sft-abc"
    work = make_output(partial_dir(final), FILES)
    expected_fingerprint = fingerprint_dir(work)

    record = publish(work, final, RECORD)

    assert not work.exists()
    assert final.is_dir()
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file()) == sorted([*FILES, STAMP])
    assert record == Artifact(uri=str(final), fingerprint=expected_fingerprint, **RECORD)
    assert stamp_of(final) == record
    assert fingerprint_dir(final) == record.fingerprint  # the stamp does not change the fingerprint


def test_publish_replaces_an_existing_output(tmp_path):
    final = make_output(tmp_path / "evaluate-1", {"old.txt": b"old"})
    work = make_output(partial_dir(final), {"metrics.json": b"{}"})
    record = publish(work, final, {"stage": "evaluate", "kind": "dataset"})
    assert sorted(p.name for p in final.iterdir()) == sorted(["metrics.json", STAMP])
    assert stamp_of(final).mlflow_run_id is None
    assert stamp_of(final) == record


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("file:///data/out", "/data/out"), ("/data/out", "/data/out"), ("rel/out", "rel/out")],
)
def test_local_path(uri, expected):
    assert local_path(uri).as_posix() == expected
