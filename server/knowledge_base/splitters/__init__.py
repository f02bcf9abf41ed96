"""Turning loaded documents into chunks: the splitter chosen in settings, chunk size and
overlap per call; table rows stay whole; optional Chinese title enhancement."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter, TextSplitter

from server.knowledge_base.splitters.chinese_recursive import ChineseRecursiveTextSplitter
from server.knowledge_base.splitters.zh_title import zh_title_enhance

SPLITTER_NAMES = ("ChineseRecursiveTextSplitter", "RecursiveCharacterTextSplitter", "MarkdownHeaderTextSplitter")
# Files whose loader yields one document per table row: never split further.
UNSPLIT_SPLITTER_NAME = "RowDocuments"

DEFAULT_MARKDOWN_HEADERS = [("#", "head1"), ("##", "head2"), ("###", "head3"), ("####", "head4")]


def make_splitter(name: str, chunk_size: int, chunk_overlap: int) -> TextSplitter:
    chunk_overlap = min(chunk_overlap, max(chunk_size - 1, 0))
    if name == "ChineseRecursiveTextSplitter":
        return ChineseRecursiveTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if name in ("RecursiveCharacterTextSplitter", "MarkdownHeaderTextSplitter"):
        return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    raise ValueError(f"unknown text splitter '{name}': choose one of {', '.join(SPLITTER_NAMES)}")


def split_documents(
    docs: list[Document],
    *,
    splitter_name: str,
    chunk_size: int,
    chunk_overlap: int,
    zh_title: bool = False,
    is_table: bool = False,
    markdown_headers: list[tuple[str, str]] | None = None,
) -> tuple[list[Document], str]:
    """Return the chunks and the name of the splitter that made them."""
    if is_table:
        chunks, used = [doc for doc in docs if doc.page_content.strip()], UNSPLIT_SPLITTER_NAME
    else:
        if splitter_name == "MarkdownHeaderTextSplitter":
            docs = _split_markdown_sections(docs, markdown_headers or DEFAULT_MARKDOWN_HEADERS)
        chunks = make_splitter(splitter_name, chunk_size, chunk_overlap).split_documents(docs)
        chunks, used = [c for c in chunks if c.page_content.strip()], splitter_name
    if zh_title and chunks:
        chunks = zh_title_enhance(chunks)
    return chunks, used


def _split_markdown_sections(docs: list[Document], headers: list[tuple[str, str]]) -> list[Document]:
    """Cut every document at its Markdown headers; the headers become metadata of each section."""
    header_splitter = MarkdownHeaderTextSplitter(headers_to_split_on=headers, strip_headers=False)
    sections = []
    for doc in docs:
        for section in header_splitter.split_text(doc.page_content):
            sections.append(Document(page_content=section.page_content, metadata={**doc.metadata, **section.metadata}))
    return sections
