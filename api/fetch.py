"""``url`` inputs: fetch the image the server is pointed at, with the limits of an upload.

The same limits as an upload (``max_upload_bytes``; pixels and type are checked afterwards by the same
code that checks uploads, from the bytes), a connect and read timeout (``fetch_timeout_s``), at most
``fetch_max_redirects`` redirects, each one checked again, and the outbound address guard of
``core.netguard`` on every hop: a URL that resolves to a loopback, private or link-local address is
refused unless ``outbound_allow`` names it (server-side request forgery).
"""

from __future__ import annotations

import time
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from api.errors import ApiError
from api.upload import Upload, safe_filename, too_large
from core import netguard
from core.settings import Settings
from core.storage import Storage

MAX_URL_LENGTH = 1000
REDIRECTS = (301, 302, 303, 307, 308)


def _refused(exc: Exception) -> ApiError:
    return ApiError(422, "url_refused", f"url: {exc}")


def _failed(message: str) -> ApiError:
    return ApiError(422, "url_fetch_failed", f"url: {message}")


def fetch_upload(url: str, storage: Storage, settings: Settings, fields: dict[str, str]) -> Upload:
    """Download ``url`` into an incoming file, as an upload would arrive; ApiError on anything wrong."""
    allow = netguard.Allow.parse(settings.outbound_allow)
    timeout = httpx.Timeout(settings.fetch_timeout_s, connect=settings.fetch_timeout_s)
    deadline = time.monotonic() + 4 * settings.fetch_timeout_s  # a slow trickle cannot hold a thread forever
    with httpx.Client(timeout=timeout, trust_env=False, headers={"user-agent": "srgan-fetch/1"}) as client:
        for _ in range(settings.fetch_max_redirects + 1):
            try:
                response = netguard.send(client, "GET", url, allow)
            except netguard.AddressRefused as exc:
                raise _refused(exc) from None
            except httpx.HTTPError as exc:
                raise _failed(f"could not fetch {url[:200]}: {type(exc).__name__}: {exc}") from None
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise _failed(f"{url[:200]} answered {response.status_code}")
                return _receive(response, url, storage, settings.max_upload_bytes, deadline, fields)
            finally:
                response.close()
    raise _failed(f"more than {settings.fetch_max_redirects} redirects")


def _receive(response: httpx.Response, url: str, storage: Storage, max_bytes: int, deadline: float,
             fields: dict[str, str]) -> Upload:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    path, out = storage.open_incoming()
    size = 0
    try:
        with out:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(max_bytes)
                if time.monotonic() > deadline:
                    raise _failed("the download took too long")
                out.write(chunk)
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise _failed(f"the download broke off: {type(exc).__name__}: {exc}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(415, "invalid_image", "the URL gave an empty file")
    name = safe_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "image")
    return Upload(path, name, size, fields)
