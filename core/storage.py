"""Jobs' files, behind one interface: a job's ``input`` and its ``result.<ext>``, under names the server makes.

Two backends, chosen by ``storage_url`` in one place (:func:`open_storage`):

- :class:`FolderStorage` (the default): ``<root>/<job id>/input`` and ``<root>/<job id>/result.<ext>``.
  Folders are made 0700 and files 0600 (only the service's user reads uploads and results). Results are
  written atomically (a temporary file in the same folder, fsync, rename), so a reader sees a whole file or
  none and a job written twice still has one result. The API and the workers must share the folder.
- :class:`S3Storage` (``s3://bucket/prefix``): the same names as object keys under the prefix, on any S3 API
  (AWS, SeaweedFS, MinIO, Garage, Ceph RGW), so the API and workers on many hosts share nothing but Redis
  and the store. An object appears whole or not at all (a PUT is atomic; a big one goes up in parts).

Either way an upload is first received into this host's spool (``<storage dir>/.incoming``), checked, and
then adopted by its job (a rename, or an upload to the store). A worker reads the input through
:meth:`Storage.input_file` (the file itself, or a download into ``<storage dir>/.inputs`` removed afterwards),
so no backend holds more than one image in memory.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

from core.job_record import is_job_id
from core.settings import Settings

INPUT_NAME = "input"
RESULT_STEM = "result"
_INCOMING = ".incoming"
_INPUTS = ".inputs"
_TMP_SUFFIX = ".tmp"
CHUNK = 1 << 20
"""Bytes per read when a result is streamed out."""
MULTIPART_THRESHOLD = 8 * 2**20
"""Objects at least this big go to the store in parts (S3 multipart upload), each this big."""


class InputMissing(FileNotFoundError):
    """The job's uploaded image is not in the store (expired and swept, or removed by hand)."""


class StorageError(OSError):
    """The store did not answer or refused a request (an ``OSError``, like a failing folder)."""


@dataclass(frozen=True)
class StoredResult:
    """A job's result as the store has it: ``path`` for a local file (served as it is), else ``open`` gives
    its bytes as a stream."""

    size: int
    path: Path | None = None
    open: Callable[[], BinaryIO] | None = None

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The result's bytes, ``size`` at a time; the stream is closed at the end (or when abandoned)."""
        if self.path is not None:
            source: BinaryIO = self.path.open("rb")
        else:
            assert self.open is not None
            source = self.open()
        with source:
            yield from iter(lambda: source.read(size), b"")


class Storage(Protocol):
    """Where the API puts uploads and workers put results; every backend behaves the same to its callers."""

    incoming_dir: Path
    """This host's spool for uploads being received (the same on every backend)."""

    def ensure(self) -> Storage: ...

    def describe(self) -> str:
        """Where the files are, for logs (no credentials)."""
        ...

    def open_incoming(self) -> tuple[Path, BinaryIO]:
        """A new, empty temporary file in the spool for an upload being received."""
        ...

    def adopt_input(self, job_id: str, incoming: Path) -> None:
        """Make a received upload the job's input (moved or uploaded; the spool file is gone after)."""
        ...

    def input_file(self, job_id: str) -> AbstractContextManager[Path]:
        """A local file with the job's input for the ``with`` block; :class:`InputMissing` when it is gone."""
        ...

    def write_result(self, job_id: str, data: bytes, ext: str, *, media_type: str, filename: str) -> None:
        """Store the result whole (a second write for the job replaces the first), with its content type and
        an ``attachment`` content disposition named ``filename`` where the backend keeps such metadata."""
        ...

    def open_result(self, job_id: str, ext: str) -> StoredResult | None:
        """The job's result, or None when there is none (never written, discarded, expired)."""
        ...

    def presign_result(self, job_id: str, ext: str, *, expires_in_s: int, media_type: str,
                       filename: str) -> str | None:
        """A URL that downloads the result straight from the store until ``expires_in_s`` from now; None
        where the backend has no such URLs (a folder)."""
        ...

    def discard_result(self, job_id: str) -> None:
        """Remove the job's result (written, then not committed because the job was canceled)."""
        ...

    def discard_partial(self, job_id: str) -> None:
        """Remove what a killed attempt left half-written."""
        ...

    def remove(self, job_id: str) -> None:
        """Remove everything of the job."""
        ...

    def job_dirs(self) -> Iterator[tuple[str, float]]:
        """``(job id, last modification time)`` of every job that has files."""
        ...

    def files(self, job_id: str) -> list[str]:
        """The names of the job's files (``input``, ``result.png``...), sorted."""
        ...

    def stale_incoming(self, older_than_s: float) -> list[Path]:
        """Spool files older than that: uploads abandoned mid-way."""
        ...

    def check_writable(self) -> None:
        """Raise OSError unless an object can be created, written and removed (spool and store)."""
        ...


def _boto_errors() -> Any:  # noqa: ANN401 - botocore is untyped
    """``botocore.exceptions``, imported on first use: the s3 extra (the folder backend never needs it)."""
    return importlib.import_module("botocore.exceptions")


def _is_missing(exc: Any) -> bool:  # noqa: ANN401 - botocore's ClientError is untyped
    """A botocore ``ClientError`` that says the object is not there (``head_object`` answers ``NotFound``)."""
    return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


def open_storage(settings: Settings) -> Storage:
    """The backend ``settings.storage_url`` names (made, not yet contacted)."""
    if settings.uses_s3:
        bucket, _, prefix = settings.storage_url.strip().removeprefix("s3://").partition("/")
        return S3Storage(bucket, prefix, spool=settings.resolved_storage_dir, endpoint_url=settings.s3_endpoint_url,
                         region=settings.s3_region, public_endpoint_url=settings.s3_public_endpoint_url)
    return FolderStorage(settings.resolved_storage_dir)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name (RFC 6266/5987), as FileResponse does."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def _check_ext(ext: str) -> str:
    if not ext.isalnum():
        raise ValueError(f"bad result extension: {ext!r}")
    return ext


def _check_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


class _Spool:
    """The local part every backend has: uploads being received, in ``<root>/.incoming``."""

    root: Path
    incoming_dir: Path

    def open_incoming(self) -> tuple[Path, BinaryIO]:
        self.incoming_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=self.incoming_dir, suffix=_TMP_SUFFIX)
        return Path(name), os.fdopen(fd, "wb")

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

    def _check_spool_writable(self) -> None:
        self.incoming_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=self.incoming_dir, prefix=".probe", suffix=_TMP_SUFFIX) as fh:
            fh.write(b"ok")
            fh.flush()


class FolderStorage(_Spool):
    """A folder of job folders; safe to share between API and worker processes (and hosts, on a shared mount)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming_dir = self.root / _INCOMING

    def ensure(self) -> FolderStorage:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.incoming_dir.mkdir(exist_ok=True, mode=0o700)
        return self

    def describe(self) -> str:
        return f"folder {self.root}"

    def job_dir(self, job_id: str) -> Path:
        return self.root / _check_id(job_id)

    def input_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / INPUT_NAME

    def result_path(self, job_id: str, ext: str) -> Path:
        return self.job_dir(job_id) / f"{RESULT_STEM}.{_check_ext(ext)}"

    # --- inputs --------------------------------------------------------------
    def adopt_input(self, job_id: str, incoming: Path) -> None:
        target = self.input_path(job_id)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(incoming, target)

    @contextlib.contextmanager
    def input_file(self, job_id: str) -> Iterator[Path]:
        path = self.input_path(job_id)
        if not path.is_file():
            raise InputMissing(2, "the uploaded image is gone", str(path))
        yield path

    # --- results -------------------------------------------------------------
    def write_result(self, job_id: str, data: bytes, ext: str, *, media_type: str = "", filename: str = "") -> None:
        """Write the result atomically (the folder keeps no metadata: the API sets the headers)."""
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

    def open_result(self, job_id: str, ext: str) -> StoredResult | None:
        path = self.result_path(job_id, ext)
        try:
            return StoredResult(size=path.stat().st_size, path=path) if path.is_file() else None
        except FileNotFoundError:
            return None

    def presign_result(self, job_id: str, ext: str, *, expires_in_s: int, media_type: str,
                       filename: str) -> str | None:
        return None

    def discard_result(self, job_id: str) -> None:
        for path in self.job_dir(job_id).glob(f"{RESULT_STEM}.*"):
            path.unlink(missing_ok=True)

    def discard_partial(self, job_id: str) -> None:
        for tmp in self.job_dir(job_id).glob(f"*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    # --- housekeeping --------------------------------------------------------
    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_dirs(self) -> Iterator[tuple[str, float]]:
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.is_dir() and is_job_id(entry.name):
                try:
                    yield entry.name, entry.stat().st_mtime
                except FileNotFoundError:  # removed meanwhile (another replica's sweep)
                    continue

    def files(self, job_id: str) -> list[str]:
        folder = self.job_dir(job_id)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def check_writable(self) -> None:
        self.ensure()
        self._check_spool_writable()


class S3Storage(_Spool):
    """Jobs' files as objects ``<prefix><job id>/input`` and ``<prefix><job id>/result.<ext>`` in one bucket.

    The boto3 client is made on first use in each process (a forked worker makes its own) with boto3's
    usual credential chain; botocore retries throttling and connection errors (standard mode).
    """

    def __init__(self, bucket: str, prefix: str = "", *, spool: Path, endpoint_url: str | None = None,
                 region: str | None = None, public_endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.root = Path(spool)
        self.incoming_dir = self.root / _INCOMING
        self.inputs_dir = self.root / _INPUTS
        """Where a worker downloads the inputs of the jobs it runs (apart from the API's uploads)."""
        self.endpoint_url, self.region = endpoint_url, region
        self.public_endpoint_url = public_endpoint_url or endpoint_url
        self._clients: dict[tuple[int, str | None], Any] = {}
        self._lock = threading.Lock()

    def _client(self, endpoint_url: str | None = None) -> Any:  # noqa: ANN401 - botocore's client is untyped
        endpoint = endpoint_url or self.endpoint_url
        key = (os.getpid(), endpoint)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    import boto3  # the s3 extra; the folder backend never needs it
                    from botocore.config import Config  # optional: the s3 extra

                    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                                    read_timeout=60, signature_version="s3v4",
                                    s3={"addressing_style": "path"} if endpoint else None)
                    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=self.region,
                                                            config=config)
                    self._clients[key] = client
        return client

    @property
    def client(self) -> Any:  # noqa: ANN401
        return self._client()

    def ensure(self) -> S3Storage:
        self.incoming_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.inputs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}{_check_id(job_id)}/{name}"

    def _transfer(self) -> Any:  # noqa: ANN401
        from boto3.s3.transfer import TransferConfig  # optional: the s3 extra

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD,
                              max_concurrency=4)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """botocore's errors as :class:`StorageError` (an OSError, what a failing folder raises)."""
        errors = _boto_errors()

        try:
            yield
        except errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            raise StorageError(5, code, what) from exc
        except errors.BotoCoreError as exc:
            raise StorageError(5, type(exc).__name__, what) from exc

    # --- inputs --------------------------------------------------------------
    def adopt_input(self, job_id: str, incoming: Path) -> None:
        """Upload the received file (in parts when big) and remove it from the spool."""
        with self._errors("upload the input"):
            self.client.upload_file(str(incoming), self.bucket, self.key(job_id, INPUT_NAME),
                                    Config=self._transfer())
        incoming.unlink(missing_ok=True)

    @contextlib.contextmanager
    def input_file(self, job_id: str) -> Iterator[Path]:
        """Download the input into ``inputs_dir`` (streamed to disk), yield it, remove it."""
        errors = _boto_errors()

        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.inputs_dir, prefix=f"{job_id}.input.", suffix=_TMP_SUFFIX)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    self.client.download_fileobj(self.bucket, self.key(job_id, INPUT_NAME), fh,
                                                 Config=self._transfer())
                except errors.ClientError as exc:
                    if _is_missing(exc):
                        raise InputMissing(2, "the uploaded image is gone",
                                           f"s3://{self.bucket}/{self.key(job_id, INPUT_NAME)}") from None
                    raise
            yield path
        finally:
            path.unlink(missing_ok=True)

    # --- results -------------------------------------------------------------
    def write_result(self, job_id: str, data: bytes, ext: str, *, media_type: str = "application/octet-stream",
                     filename: str = "") -> None:
        key = self.key(job_id, f"{RESULT_STEM}.{_check_ext(ext)}")
        extra = {"ContentType": media_type or "application/octet-stream"}
        if filename:
            extra["ContentDisposition"] = content_disposition(filename)
        with self._errors("store the result"):
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, ExtraArgs=extra, Config=self._transfer())
            stale = [k for k in self._keys(f"{self.prefix}{job_id}/{RESULT_STEM}.") if k != key]
            self._delete(stale)

    def open_result(self, job_id: str, ext: str) -> StoredResult | None:
        errors = _boto_errors()

        key = self.key(job_id, f"{RESULT_STEM}.{_check_ext(ext)}")
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except errors.ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(5, str(exc.response.get("Error", {}).get("Code", "error")), "read the result") from exc

        def open_body() -> BinaryIO:
            with self._errors("read the result"):
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

        return StoredResult(size=int(head["ContentLength"]), open=open_body)

    def presign_result(self, job_id: str, ext: str, *, expires_in_s: int, media_type: str,
                       filename: str) -> str | None:
        """Signed locally (no request to the store), for the address clients reach the store at."""
        params = {"Bucket": self.bucket, "Key": self.key(job_id, f"{RESULT_STEM}.{_check_ext(ext)}"),
                  "ResponseContentType": media_type, "ResponseContentDisposition": content_disposition(filename)}
        return str(self._client(self.public_endpoint_url).generate_presigned_url(
            "get_object", Params=params, ExpiresIn=max(1, expires_in_s)))

    def discard_result(self, job_id: str) -> None:
        with self._errors("remove the result"):
            self._delete(list(self._keys(f"{self.prefix}{job_id}/{RESULT_STEM}.")))

    def discard_partial(self, job_id: str) -> None:
        """Remove this host's download of the input that a killed attempt left in the spool (an object a
        killed attempt was writing never appeared: the store drops it)."""
        for tmp in self.inputs_dir.glob(f"{_check_id(job_id)}.input.*{_TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    # --- housekeeping --------------------------------------------------------
    def _keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self._listing(prefix):
            yield key

    def _listing(self, prefix: str) -> Iterator[tuple[str, float]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"]), float(item["LastModified"].timestamp())

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            if batch:
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})

    def remove(self, job_id: str) -> None:
        with self._errors("remove the job's files"):
            self._delete(list(self._keys(f"{self.prefix}{_check_id(job_id)}/")))

    def job_dirs(self) -> Iterator[tuple[str, float]]:
        newest: dict[str, float] = {}
        with self._errors("list the jobs' files"):
            for key, mtime in self._listing(self.prefix):
                job_id = key[len(self.prefix):].split("/", 1)[0]
                if is_job_id(job_id):
                    newest[job_id] = max(mtime, newest.get(job_id, 0.0))
        yield from newest.items()

    def files(self, job_id: str) -> list[str]:
        start = f"{self.prefix}{_check_id(job_id)}/"
        with self._errors("list the job's files"):
            return sorted(key[len(start):] for key in self._keys(start))

    # --- other objects under the prefix (the models' mirror, core.catalog.store_sync) -----------------
    def object_keys(self, under: str) -> list[str]:
        """Keys below ``<prefix><under>``, relative to the prefix."""
        with self._errors("list objects"):
            return sorted(key[len(self.prefix):] for key in self._keys(self.prefix + under))

    def read_object(self, name: str) -> bytes | None:
        """The bytes of a small object ``<prefix><name>``; None when there is none."""
        errors = _boto_errors()

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except errors.ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(5, str(exc.response.get("Error", {}).get("Code", "error")), "read an object") from exc
        with body:
            return bytes(body.read())

    def write_object(self, name: str, data: bytes | Path, media_type: str = "application/octet-stream") -> None:
        """Store ``data`` (bytes, or a file streamed in parts) as ``<prefix><name>``."""
        with self._errors("write an object"):
            if isinstance(data, Path):
                self.client.upload_file(str(data), self.bucket, self.prefix + name,
                                        ExtraArgs={"ContentType": media_type}, Config=self._transfer())
            else:
                self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType=media_type)

    def download_object(self, name: str, target: Path) -> None:
        """Stream ``<prefix><name>`` into the file ``target``."""
        with self._errors("download an object"):
            self.client.download_file(self.bucket, self.prefix + name, str(target), Config=self._transfer())

    def check_writable(self) -> None:
        self._check_spool_writable()
        key = f"{self.prefix}.probe/{uuid.uuid4().hex}"
        with self._errors(f"write to s3://{self.bucket}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
            self.client.delete_object(Bucket=self.bucket, Key=key)
