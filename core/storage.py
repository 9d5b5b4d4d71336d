"""Jobs' files: ``<root>/<job id>/input`` and ``<root>/<job id>/result.<ext>``, under names the server makes.

Folders are made 0700 and files 0600 (only the service's user reads uploads
and results). Uploads are streamed into ``<root>/.incoming/`` and moved into their job's
folder once accepted; results are written atomically (a temporary file in
the same folder, fsync, rename), so a reader sees a whole file or none and a
job written twice still has one result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.jobs import is_job_id

INPUT_NAME = "input"
RESULT_STEM = "result"
_INCOMING = ".incoming"
_TMP_SUFFIX = ".tmp"


class Storage:
    """A folder of job folders; safe to share between API and worker processes (and hosts)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming_dir = self.root / _INCOMING

    def ensure(self) -> Storage:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.incoming_dir.mkdir(exist_ok=True, mode=0o700)
        return self

    def job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def input_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / INPUT_NAME

    def result_path(self, job_id: str, ext: str) -> Path:
        if not ext.isalnum():
            raise ValueError(f"bad result extension: {ext!r}")
        return self.job_dir(job_id) / f"{RESULT_STEM}.{ext}"

    # --- uploads -------------------------------------------------------------
    def open_incoming(self) -> tuple[Path, BinaryIO]:
        """A new, empty temporary file for an upload being received."""
        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.incoming_dir, suffix=_TMP_SUFFIX)
        return Path(name), os.fdopen(fd, "wb")

    def adopt_input(self, job_id: str, incoming: Path) -> Path:
        """Move a received upload into its job's folder."""
        target = self.input_path(job_id)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(incoming, target)
        return target

    # --- results -------------------------------------------------------------
    def write_result(self, job_id: str, data: bytes, ext: str) -> Path:
        """Write the result atomically; a second write for the same job replaces the first."""
        target = self.result_path(job_id, ext)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{RESULT_STEM}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for other in target.parent.glob(f"{RESULT_STEM}.*"):
            if other != target and not other.name.endswith(_TMP_SUFFIX):
                other.unlink(missing_ok=True)
        return target

    def discard_result(self, job_id: str) -> None:
        """Remove the job's result (written, then not committed because the job was canceled)."""
        for path in self.job_dir(job_id).glob(f"{RESULT_STEM}.*"):
            path.unlink(missing_ok=True)

    def discard_partial(self, job_id: str) -> None:
        """Remove temporary files a killed attempt left in the job's folder."""
        for tmp in self.job_dir(job_id).glob(f"*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    # --- housekeeping --------------------------------------------------------
    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_dirs(self) -> Iterator[tuple[str, float]]:
        """``(job id, modification time)`` of every job folder."""
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.is_dir() and is_job_id(entry.name):
                try:
                    yield entry.name, entry.stat().st_mtime
                except FileNotFoundError:  # removed meanwhile (another replica's sweep)
                    continue

    def stale_incoming(self, older_than_s: float) -> list[Path]:
        if not self.incoming_dir.is_dir():
            return []
        cutoff = time.time() - older_than_s
        stale = []
        for path in self.incoming_dir.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    stale.append(path)
            except FileNotFoundError:  # adopted by its job, or removed, since the listing
                continue
        return stale

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created, written and removed here."""
        self.ensure()
        with tempfile.NamedTemporaryFile(dir=self.incoming_dir, prefix=".probe", suffix=_TMP_SUFFIX) as fh:
            fh.write(b"ok")
            fh.flush()
