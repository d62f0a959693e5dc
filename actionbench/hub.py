"""Whether the Hugging Face hub can be used, found once per process and fast: HF_HUB_OFFLINE, or its host (or
the proxy to it) not answering within PROBE_SECONDS. Where it cannot, weights are looked up in the cache only,
so a model missing there is reported at once, not after huggingface_hub's retries (about 25 s per file)."""

from __future__ import annotations

import functools
import socket
import threading
import urllib.request
from contextlib import contextmanager
from urllib.parse import urlsplit

PROBE_SECONDS = 2.0


@functools.cache
def offline_reason() -> str | None:
    """Why the hub cannot be reached from here, for messages (None when it answers)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    answered = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=PROBE_SECONDS).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo takes no timeout: the join bounds it
    thread.start()
    thread.join(PROBE_SECONDS)
    if answered:
        return None
    return f"the hub ({address[0]}:{address[1]}) is not reachable (no connection within {PROBE_SECONDS:g} s)"


def cache_only_note(reason: str | None) -> str:
    """A message's clause saying that only the cache was searched, and why."""
    return f" (only the Hugging Face cache was searched: {reason})" if reason else ""


@contextmanager
def cache_only(reason: str | None):
    """huggingface_hub offline inside the block where `reason` says the hub cannot be reached: for loaders that
    take no `local_files_only` (open_clip's), which then find cached files without trying the network."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or reason is not None
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
