"""Markup and mail families: .html .htm .mhtml .eml .epub."""

from __future__ import annotations

import email
import warnings
import zipfile
from email import policy
from email.message import EmailMessage
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError, join_nonempty
from server.knowledge_base.loaders.decoding import decode_text
from server.knowledge_base.loaders.limits import check_zip_package

# Elements whose text a reader never sees.
_INVISIBLE_TAGS = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object"]
# Elements that start a new line when a browser lays them out.
_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "title", "tr", "ul",
]  # fmt: skip
_MAIL_HEADERS = ("From", "To", "Cc", "Subject", "Date")


def html_to_text(html: str | bytes) -> str:
    """Visible text of an HTML page, one line per block element, whitespace collapsed."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    for tag in soup.find_all(_INVISIBLE_TAGS):
        tag.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" | ")
    lines = (" ".join(line.split()).removesuffix(" |") for line in soup.get_text().split("\n"))
    return join_nonempty(lines)


def load_html(path: Path, ctx: LoadContext) -> list[Document]:
    raw = path.read_bytes()
    if not raw.strip():
        raise LoaderError("file is empty")
    # Bytes, not decoded text: BeautifulSoup honours the page's own <meta charset> declaration.
    return [ctx.document(html_to_text(raw))]


# ---- mail -----------------------------------------------------------------------------------


def _read_message(path: Path) -> EmailMessage:
    raw = path.read_bytes()
    if not raw.strip():
        raise LoaderError("file is empty")
    return email.message_from_bytes(raw, policy=policy.default)


def _part_text(part) -> str:
    """Decoded text of one MIME part; an unknown or wrong charset falls back to detection."""
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError, AssertionError):
        content = decode_text(part.get_payload(decode=True) or b"", ".eml")
    if isinstance(content, bytes):
        content = decode_text(content, ".eml")
    return html_to_text(content) if part.get_content_subtype() == "html" else content


def load_email(path: Path, ctx: LoadContext) -> list[Document]:
    """.eml: From/To/Cc/Subject/Date, then the plain-text body (or the HTML body as text)."""
    message = _read_message(path)
    headers = [f"{name}: {message[name]}" for name in _MAIL_HEADERS if message[name]]
    body_part = message.get_body(preferencelist=("plain", "html"))
    body = _part_text(body_part) if body_part is not None else ""
    return [ctx.document(join_nonempty([*headers, "", body]))]


def load_mhtml(path: Path, ctx: LoadContext) -> list[Document]:
    """.mhtml (a saved web page): the text of its HTML parts."""
    message = _read_message(path)
    pages = [_part_text(part) for part in message.walk() if part.get_content_type() == "text/html"]
    if not pages:
        raise LoaderError("no HTML page found in the .mhtml archive")
    return [ctx.document(join_nonempty(pages))]


# ---- EPUB -----------------------------------------------------------------------------------


def load_epub(path: Path, ctx: LoadContext) -> list[Document]:
    """One Document per content document, in spine (reading) order."""
    import ebooklib

    book = _open_epub(path)
    docs = []
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        text = html_to_text(item.get_content())
        if text:
            docs.append(ctx.document(text))
    return docs


def _open_epub(path: Path):
    from ebooklib import epub

    check_zip_package(path, ".epub")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about its own option defaults on every read
            return epub.read_epub(str(path), options={"ignore_ncx": True})
    except (zipfile.BadZipFile, epub.EpubException, KeyError, IndexError, AttributeError) as exc:
        raise LoaderError(f"not a valid EPUB book (damaged, or missing its container/OPF): {exc}")
