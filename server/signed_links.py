"""Download links a browser can open while the API requires keys.

A browser following a source link from a chat answer (or the web UI's preview button) cannot
send an ``Authorization`` header. So, when API keys are configured, such links carry
``expires`` (Unix time) and ``signature``: an HMAC-SHA256, keyed with one of the API keys, of the
knowledge base, the file name and the expiry. The link opens exactly that file until it expires;
anything else still needs a key, and removing a key from API_KEYS revokes the links made with it.

Kept free of server imports, so the web UI's client (which holds a key) builds its links here too.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlencode

DOWNLOAD_PATH = "/knowledge_base/download_doc"


def _signature(key: str, kb_name: str, file_name: str, expires: int) -> str:
    message = f"{kb_name}\n{file_name}\n{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def signed_params(key: str, kb_name: str, file_name: str, ttl_seconds: int, now: float | None = None) -> dict[str, str]:
    """The query parameters to add to a download_doc link for ``kb_name``/``file_name``."""
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return {"expires": str(expires), "signature": _signature(key, kb_name, file_name, expires)}


def download_url(base_url: str, kb_name: str, file_name: str, key: str | None = None, preview: bool = False) -> str:
    """A download_doc link a browser can open: signed with ``key`` (for SIGNED_LINK_TTL_HOURS) when given."""
    query = {"knowledge_base_name": kb_name, "file_name": file_name}
    if preview:
        query["preview"] = "true"
    if key:
        from configs import get_settings

        ttl = int(get_settings().SIGNED_LINK_TTL_HOURS * 3600)
        query.update(signed_params(key, kb_name, file_name, ttl))
    return f"{base_url.rstrip('/')}{DOWNLOAD_PATH}?{urlencode(query)}"


def is_signed_download(query_string: bytes | str, keys: list[str], now: float | None = None) -> bool:
    """Whether a download_doc query carries an unexpired signature by one of ``keys`` for its own file."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    query = parse_qs(query_string, keep_blank_values=True)
    values = {name: query.get(name, []) for name in ("knowledge_base_name", "file_name", "expires", "signature")}
    if any(len(v) != 1 for v in values.values()):  # a repeated name could sign one file and fetch another
        return False
    kb_name, file_name, expires, signature = (v[0] for v in values.values())
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        return False
    # compare_digest against every key: the time taken does not tell which key was close.
    matches = [hmac.compare_digest(signature, _signature(key, kb_name, file_name, int(expires))) for key in keys]
    return any(matches)
