from langchain_core.documents import Document

from server.knowledge_base.splitters import UNSPLIT_SPLITTER_NAME, split_documents
from server.knowledge_base.splitters.zh_title import looks_like_title

ZH = "知识库问答系统先把文档切成小块。然后为每一块计算向量！检索时找出最相近的块？最后交给大模型回答。" * 8


def _split(text, name="ChineseRecursiveTextSplitter", size=60, overlap=10, **kw):
    chunks, used = split_documents(
        [Document(page_content=text, metadata={"source": "a.txt"})],
        splitter_name=name,
        chunk_size=size,
        chunk_overlap=overlap,
        **kw,
    )
    return chunks, used


def test_chinese_splitter_honours_size_and_cuts_at_sentence_ends():
    chunks, used = _split(ZH)
    assert used == "ChineseRecursiveTextSplitter"
    assert len(chunks) > 5
    assert all(len(c.page_content) <= 60 for c in chunks)
    assert all(c.page_content[-1] in "。！？" for c in chunks)
    assert all(c.metadata["source"] == "a.txt" for c in chunks)


def test_chunk_size_and_overlap_are_per_call():
    small, _ = _split(ZH, size=40, overlap=0)
    large, _ = _split(ZH, size=200, overlap=0)
    assert len(small) > len(large) * 3


def test_english_sentences_split_after_the_mark():
    text = "The cat sat on the mat. The dog lay on the rug! Did the bird sing? It did. " * 6
    chunks, _ = _split(text, size=50, overlap=0)
    assert all(len(c.page_content) <= 50 for c in chunks)
    assert all(c.page_content.rstrip()[-1] in ".!?" for c in chunks)


def test_text_without_separators_is_still_bounded():
    chunks, _ = _split("字" * 500, size=100, overlap=20)
    assert all(len(c.page_content) <= 100 for c in chunks)
    assert sum(len(c.page_content) for c in chunks) >= 500


def test_table_rows_are_not_split():
    rows = [Document(page_content="question: " + "长" * 400, metadata={"source": "faq.csv", "row": 1})]
    chunks, used = split_documents(rows, splitter_name="ChineseRecursiveTextSplitter", chunk_size=50,
                                   chunk_overlap=0, is_table=True)  # fmt: skip
    assert used == UNSPLIT_SPLITTER_NAME
    assert len(chunks) == 1 and chunks[0].metadata["row"] == 1


def test_markdown_header_splitter_records_headers():
    text = "# Install\nRun pip install.\n\n## GPU\nCUDA is used when present.\n\n# Usage\nStart the stack."
    chunks, used = _split(text, name="MarkdownHeaderTextSplitter", size=200)
    assert used == "MarkdownHeaderTextSplitter"
    gpu = next(c for c in chunks if "CUDA" in c.page_content)
    assert gpu.metadata["head1"] == "Install" and gpu.metadata["head2"] == "GPU"
    assert "Start the stack" not in gpu.page_content


def test_zh_title_enhance_marks_titles_and_prefixes_followers():
    docs = [Document("1 安装指南"), Document("先安装依赖，再启动服务。"), Document("2 使用说明")]
    chunks, _ = split_documents(docs, splitter_name="ChineseRecursiveTextSplitter", chunk_size=250,
                                chunk_overlap=0, zh_title=True)  # fmt: skip
    assert chunks[0].metadata["category"] == "cn_Title"
    assert chunks[1].page_content.startswith("下文与(1 安装指南)有关。")
    assert looks_like_title("2 使用说明") and not looks_like_title("这是一个很普通的句子。")
