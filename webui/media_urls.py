"""Images given by URL, as the API's ``image_url`` content parts give them.

``data:`` URLs are always read. ``http(s)`` URLs are fetched only when Hearth was started with
``--allow-image-urls``: the server then downloads whatever address a client names (its own network
included), so it is off by default. A fetch follows at most a few redirects, each to http(s) only (never
``file:`` or another scheme), reads at most `webui.media.MAX_IMAGE_BYTES`, and gives up after
`FETCH_TIMEOUT_S` in all. Every failure is a MediaError naming the part and the URL.
"""

from __future__ import annotations

import time
from urllib.parse import urljoin, urlsplit

import httpx

from webui.chat_messages import ImageResolver
from webui.media import MAX_IMAGE_BYTES, Image, MediaError

#: Longest one image download may take, redirects included (seconds).
FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
_FETCHED = ("http", "https")


def image_resolver(allow_fetch: bool) -> ImageResolver:
    """Reads an image part's URL: a data: URL, or with `allow_fetch` an http(s) URL downloaded here."""

    def resolve(url: str, where: str) -> Image:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "data":
            return Image.from_data_url(url, where)
        if scheme in _FETCHED:
            if not allow_fetch:
                raise MediaError(
                    f"{where}: image URLs are not fetched by this server; send the image inline as a data: URL "
                    "(data:image/png;base64,...), or start Hearth with --allow-image-urls to let it download "
                    "http(s) images"
                )
            return fetch_image(url, where)
        accepted = (
            "a data: URL or an http(s) URL" if allow_fetch else "a data: URL (data:image/png;base64,...)"
        )
        raise MediaError(
            f"{where}: {scheme + ':' if scheme else 'this kind of'} URL is not accepted; send {accepted}"
        )

    return resolve


def fetch_image(url: str, where: str, *, timeout: float | None = None, max_bytes: int | None = None) -> Image:
    """Download an image (http/https, redirects only to http/https) within `timeout` seconds in all and
    `max_bytes`; MediaError saying what went wrong otherwise. Defaults: the module's limits, read at call time."""
    timeout = FETCH_TIMEOUT_S if timeout is None else timeout
    max_bytes = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(follow_redirects=False, timeout=httpx.Timeout(timeout)) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url, headers={"Accept": "image/*"}) as response:
                    if response.is_redirect:
                        url = _redirect_target(url, response, where)
                        continue
                    if response.status_code != 200:
                        raise MediaError(f"{where}: {url} answered HTTP {response.status_code}, not an image")
                    return Image.from_bytes(_body(response, url, where, max_bytes, deadline, timeout), where)
    except httpx.TimeoutException:
        raise MediaError(f"{where}: fetching {url} took longer than {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise MediaError(f"{where}: cannot fetch {url}: {exc}") from None
    raise MediaError(f"{where}: {url} redirects more than {MAX_REDIRECTS} times")


def _redirect_target(url: str, response: httpx.Response, where: str) -> str:
    target = urljoin(url, response.headers.get("location", ""))
    if urlsplit(target).scheme.lower() not in _FETCHED:
        raise MediaError(f"{where}: {url} redirects to {target!r}; only http(s) addresses are fetched")
    return target


def _body(
    response: httpx.Response, url: str, where: str, max_bytes: int, deadline: float, timeout: float
) -> bytes:
    """The response body, stopped as soon as it is over `max_bytes` or past the deadline."""
    limit = f"{max_bytes / 2**20:.1f} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
    too_big = MediaError(f"{where}: {url} is larger than {limit}, the limit for one image")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise too_big
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"over {timeout:g} s")
        chunks.append(chunk)
    return b"".join(chunks)
