"""Job files: server-made names, atomic results, one result per job, and sweeping."""

from __future__ import annotations

import os
import time
from typing import cast

import pytest

from core.cleanup import sweep_expired
from core.job_record import new_job_id
from core.jobs import JobStore
from core.storage import FolderStorage

pytestmark = pytest.mark.unit


def test_names_are_made_by_the_server_and_only_from_job_ids(tmp_path):
    storage = FolderStorage(tmp_path)
    job_id = new_job_id()
    assert storage.input_path(job_id) == tmp_path / job_id / "input"
    for bad in ("../etc", "x/../../y", "", "3F1B7E1C-0000-4000-8000-000000000000"):
        with pytest.raises(ValueError):
            storage.job_dir(bad)
    with pytest.raises(ValueError):
        storage.result_path(job_id, "png/../x")


def test_upload_is_adopted_and_results_replace_each_other_atomically(tmp_path):
    storage = FolderStorage(tmp_path)
    job_id = new_job_id()
    incoming, fh = storage.open_incoming()
    with fh:
        fh.write(b"image bytes")
    storage.adopt_input(job_id, incoming)
    assert not incoming.exists() and storage.input_path(job_id).read_bytes() == b"image bytes"

    storage.write_result(job_id, b"first", "png")
    storage.write_result(job_id, b"second", "png")
    storage.write_result(job_id, b"third", "webp")  # a redelivery asked for another format
    assert sorted(p.name for p in (tmp_path / job_id).iterdir()) == ["input", "result.webp"]
    assert storage.result_path(job_id, "webp").read_bytes() == b"third"


def test_partial_files_of_a_killed_attempt_are_discarded(tmp_path):
    storage = FolderStorage(tmp_path)
    job_id = new_job_id()
    storage.job_dir(job_id).mkdir(parents=True)
    (storage.job_dir(job_id) / ".result.abc.tmp").write_bytes(b"half")
    storage.discard_partial(job_id)
    assert list(storage.job_dir(job_id).iterdir()) == []


class FakeStore:
    """The two calls the sweeper makes, over a set of live ids."""

    def __init__(self, live: set[str]) -> None:
        self.live = live

    def existing(self, ids):
        return {i: i in self.live for i in ids}

    def prune_state_sets(self) -> int:
        return 0


def test_sweep_removes_folders_without_a_record_after_the_grace_period(tmp_path):
    storage = FolderStorage(tmp_path).ensure()
    live, expired, young = new_job_id(), new_job_id(), new_job_id()
    for job_id in (live, expired, young):
        storage.job_dir(job_id).mkdir()
    old = time.time() - 3600
    for job_id in (live, expired):
        os.utime(storage.job_dir(job_id), (old, old))
    stale_upload, fh = storage.open_incoming()
    fh.close()
    os.utime(stale_upload, (old, old))

    report = sweep_expired(cast(JobStore, FakeStore({live})), storage, grace_s=600)
    assert report.removed_jobs == 1 and report.removed_incoming == 1
    assert storage.job_dir(live).exists() and storage.job_dir(young).exists()
    assert not storage.job_dir(expired).exists() and not stale_upload.exists()


def test_writable_check(tmp_path):
    FolderStorage(tmp_path / "new").check_writable()
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(OSError):
        FolderStorage(tmp_path / "a-file" / "jobs").check_writable()


def test_job_dirs_skip_a_folder_removed_between_listing_and_stat(tmp_path, monkeypatch):
    storage = FolderStorage(tmp_path).ensure()
    kept, vanished = new_job_id(), new_job_id()
    for job_id in (kept, vanished):
        storage.job_dir(job_id).mkdir()
    real_scandir = os.scandir

    def listed_then_removed(path):
        entries = list(real_scandir(path))
        for entry in entries:
            entry.is_dir()  # what the listing saw (cached), as when the folder was still there
        storage.job_dir(vanished).rmdir()  # another replica's sweep, right after the listing
        return iter(entries)

    monkeypatch.setattr("core.storage.os.scandir", listed_then_removed)
    assert [job_id for job_id, _ in storage.job_dirs()] == [kept]


def test_stale_incoming_skips_an_upload_gone_between_listing_and_stat(tmp_path):
    storage = FolderStorage(tmp_path).ensure()
    uploads = []
    for _ in range(2):
        path, fh = storage.open_incoming()
        fh.close()
        old = time.time() - 3600
        os.utime(path, (old, old))
        uploads.append(path)
    kept, adopted = uploads

    class ListedThenAdopted(type(storage.incoming_dir)):  # type: ignore[misc]  # this platform's Path class
        """The incoming folder, whose second upload is adopted by its job right after the listing."""

        def iterdir(self):
            listed = list(super().iterdir())
            adopted.unlink()
            return iter(listed)

    storage.incoming_dir = ListedThenAdopted(storage.incoming_dir)
    assert storage.stale_incoming(older_than_s=600) == [kept]
