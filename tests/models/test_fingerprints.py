"""models/fingerprints.py: local files and folders by content (with the digest cache), hub models and datasets by
their commit, asked of the hub or, offline, read from real local caches (a hub-cache snapshot of a real model
folder, a `datasets` cache prepared by `datasets` itself). Only the network call that returns a commit is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from models import fingerprints
from models.factory import resolve_source
from models.fingerprints import SourceError, content_fingerprint, hub_fingerprint, hub_revision
from models.storage import cache_root

SHA_A, SHA_B = "a" * 40, "b" * 40


def _old(path: Path) -> Path:
    """A file whose last change is long past the racy window (so its digest may be cached)."""
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return path


def _cached_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(cache_root() / "file_sha256.sqlite") as db:
        return db.execute("SELECT size, sha256 FROM digests WHERE path=?", (str(path.resolve()),)).fetchall()


def test_a_file_is_keyed_by_its_bytes_not_its_path(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text('{"question": "1+1", "answer": "2"}\n')
    two.write_text('{"question": "1+1", "answer": "2"}\n')
    before = content_fingerprint(one)
    assert before == content_fingerprint(two) == content_fingerprint(one)
    one.write_text('{"question": "1+1", "answer": "3"}\n')  # same path, same size, new content
    assert content_fingerprint(one) != before


def test_an_unchanged_file_is_read_once(tmp_path, monkeypatch):
    from models import stores

    reads = []
    real = stores.file_sha256
    monkeypatch.setattr(stores, "file_sha256", lambda path, digests=(): reads.append(path) or real(path, digests))
    monkeypatch.setattr(fingerprints, "RACY_S", 0.0)  # the file was written a moment ago: cache it anyway
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(1 << 16))
    first = content_fingerprint(weights)
    assert content_fingerprint(weights) == first and len(reads) == 1
    assert _cached_rows(weights) == [(1 << 16, fingerprints.file_digest(weights))]
    weights.write_bytes(os.urandom(1 << 16))
    assert content_fingerprint(weights) != first and len(reads) == 2


def test_a_file_changed_within_the_racy_window_is_not_cached(tmp_path):
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("{}\n")
    content_fingerprint(fresh)
    assert _cached_rows(fresh) == []  # a second write in the same timestamp tick would go unseen


def test_restoring_the_mtime_does_not_hide_new_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprints, "RACY_S", 0.0)
    path = tmp_path / "rows.jsonl"
    path.write_text("a\n")
    _old(path)
    before = content_fingerprint(path)
    path.write_text("b\n")  # same size
    _old(path)  # same mtime as before: the ctime (and the digest) still differ
    assert content_fingerprint(path) != before


def test_a_folder_is_keyed_by_its_files(tmp_path):
    folder = shutil.copytree(resolve_source("builtin:tiny_base"), tmp_path / "model")
    before = content_fingerprint(folder)
    (folder / "build_info.json").write_text("{}")  # metadata about the folder, not of it
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.metadata").write_text("etag and a timestamp")
    assert content_fingerprint(folder) == before
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    changed = content_fingerprint(folder)
    assert changed != before
    (folder / "config.json").rename(folder / "config.bak")
    assert content_fingerprint(folder) not in (before, changed)


def test_a_missing_path_fails_in_one_line(tmp_path):
    with pytest.raises(SourceError, match="no file or folder at") as err:
        content_fingerprint(tmp_path / "gone")
    assert "\n" not in str(err.value)


def _asks(monkeypatch, answer):
    """Replace the one network call: a commit per (repo, revision), or an exception (offline)."""
    asked = []

    def asked_sha(repo_id, repo_type, revision):
        asked.append((repo_id, repo_type, revision))
        if isinstance(answer, Exception):
            raise answer
        return answer(revision) if callable(answer) else answer

    monkeypatch.setattr(fingerprints, "_asked_sha", asked_sha)
    return asked


def test_a_hub_source_is_keyed_by_the_commit_the_hub_gives(monkeypatch):
    commits = {"main": SHA_A}
    asked = _asks(monkeypatch, lambda revision: commits[revision or "main"])
    before = hub_fingerprint("org/qa", "dataset")
    assert hub_fingerprint("org/qa", "dataset") == before
    commits["main"] = SHA_B  # new data pushed under the same id
    assert hub_fingerprint("org/qa", "dataset") != before
    commits["v1"] = SHA_A
    assert hub_fingerprint("org/qa", "dataset", "v1") == before  # a tag at the first commit: the first key
    assert asked[-1] == ("org/qa", "dataset", "v1")
    assert hub_fingerprint("org/qa", "model", "v1") != before
    assert hub_fingerprint("org/qa", "dataset", "v1", config="main") != before


def test_an_invalid_hub_id_fails_in_one_line_without_the_network():
    with pytest.raises(SourceError, match="hub dataset 'a/b/c'") as err:
        hub_revision("a/b/c", "dataset")
    assert "\n" not in str(err.value) and "check the id" in str(err.value)


def _offline(monkeypatch, tmp_path):
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    _asks(monkeypatch, OfflineModeIsEnabled("offline"))


def hub_snapshot(cache: Path, repo_id: str, sha: str, model: Path) -> Path:
    """A real model folder in the hub cache's layout (refs/main -> snapshots/<sha>/ -> blobs), as a download
    leaves it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    for file in (p for p in model.rglob("*") if p.is_file()):
        blob = repo / "blobs" / fingerprints.file_digest(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        (snapshot / file.relative_to(model)).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / file.relative_to(model)).symlink_to(blob)
    return snapshot


def test_offline_a_hub_model_is_keyed_by_its_cached_snapshot(tmp_path, monkeypatch):
    from transformers import AutoConfig
    from transformers.utils import cached_file

    _offline(monkeypatch, tmp_path)
    hub_snapshot(tmp_path / "hub", "org/tiny", SHA_A, Path(resolve_source("builtin:tiny_base")))
    assert hub_revision("org/tiny", "model") == SHA_A
    before = hub_fingerprint("org/tiny", "model")
    hub_snapshot(tmp_path / "hub", "org/tiny", SHA_B, Path(resolve_source("builtin:tiny_base")))  # re-downloaded
    assert hub_fingerprint("org/tiny", "model") != before
    assert hub_revision("org/tiny", "model", revision=SHA_A) == SHA_A  # a pinned commit that is cached
    where = {"cache_dir": str(tmp_path / "hub"), "local_files_only": True}
    assert AutoConfig.from_pretrained("org/tiny", **where).model_type == "llama"
    assert Path(cached_file("org/tiny", "config.json", **where)).parent.name == SHA_B  # the commit it names


def datasets_cache(cache: Path, repo_id: str, sha: str, rows: list[dict], work: Path) -> Path:
    """A hub dataset as `load_dataset` leaves it in its cache (`<ns>___<name>/<config>/<version>/<commit>/`),
    prepared by `datasets`' own json builder from real rows."""
    import datasets

    work.mkdir(parents=True)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    builder = datasets.load_dataset_builder("json", data_files=str(work / "rows.jsonl"), cache_dir=str(work / "c"))
    builder.download_and_prepare()
    name = repo_id.split("/")[-1]
    target = cache / repo_id.replace("/", "___") / "default" / "0.0.0" / sha
    target.mkdir(parents=True)
    shutil.copyfile(Path(builder.cache_dir) / "json-train.arrow", target / f"{name}-train.arrow")
    info = json.loads((Path(builder.cache_dir) / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default", "dataset_name": name}))
    return target


def test_offline_a_hub_dataset_is_keyed_by_what_load_dataset_reads(tmp_path, monkeypatch):
    from models.problems import read_rows

    _offline(monkeypatch, tmp_path)
    first = datasets_cache(tmp_path / "datasets", "org/qa", SHA_A, [{"question": "1+1", "answer": "2"}], tmp_path / "a")
    assert hub_revision("org/qa", "dataset") == SHA_A
    assert read_rows("org/qa") == [{"question": "1+1", "answer": "2"}]
    before = hub_fingerprint("org/qa", "dataset")
    second = datasets_cache(
        tmp_path / "datasets", "org/qa", SHA_B, [{"question": "2+2", "answer": "4"}], tmp_path / "b"
    )
    os.utime(first, (1, 1))  # the newer download is the one `datasets` reads offline
    assert read_rows("org/qa") == [{"question": "2+2", "answer": "4"}] and second.name == SHA_B
    assert hub_fingerprint("org/qa", "dataset") != before
    with pytest.raises(SourceError, match=f"offline, the local cache holds commit {SHA_B}"):
        hub_revision("org/qa", "dataset", revision=SHA_A)


def test_offline_and_not_cached_fails_in_one_line(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    for repo_type in ("model", "dataset"):
        with pytest.raises(SourceError, match="not in the local cache") as err:
            hub_fingerprint("org/never-downloaded", repo_type)
        assert "\n" not in str(err.value) and "OfflineModeIsEnabled" in str(err.value)
