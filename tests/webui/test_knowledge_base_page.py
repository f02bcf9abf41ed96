"""The knowledge-base page driven by Streamlit's AppTest against the real API server."""

from __future__ import annotations

import uuid

import pytest

from tests.webui.support import ALPHA_TEXT, BETA_TEXT, new_app, texts
from webui_pages.api_client import ApiClient
from webui_pages.knowledge_base.page import NEW_KB


@pytest.fixture
def api(ui_settings):
    with ApiClient(ui_settings.url, timeout=120) as client:
        yield client


def open_kb_page():
    at = new_app()
    at.run()
    at.sidebar.radio(key="page").set_value("knowledge_base").run()
    assert not at.exception, at.exception
    return at


def vectorized_files_in_table(at) -> list[str]:
    """Files the table marks as in the vector store (it may also list files only in the folder)."""
    table = at.dataframe[0].value
    return sorted(name for name, mark in zip(table["文档名称"], table["向量库"], strict=True) if mark == "✓")


def test_create_upload_and_manage_files(api):
    name = f"ui_{uuid.uuid4().hex[:8]}"
    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(NEW_KB).run()
    at.text_input(key="new_kb_name").input(name)
    at.text_input(key="new_kb_info").input("Zephyr warehouse notes")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    assert f"已新增知识库 {name}" in texts(at.success)
    assert at.selectbox(key="kb_pick").value == name
    if api.list_knowledge_base_details().ok:  # the description is only readable through the details route
        assert at.text_input(key=f"kb_info_{name}").value == "Zephyr warehouse notes"

    files = [
        ("alpha.txt", ALPHA_TEXT.encode(), "text/plain"),
        ("beta.md", BETA_TEXT.encode(), "text/markdown"),
        ("broken.xyz", b"not a supported format", "application/octet-stream"),
    ]
    at.file_uploader[0].set_value(files).run()
    assert "0 个文件" in texts(at.caption)[0]
    at.button(key="add_files").click().run()
    assert not at.exception, at.exception
    # The page is drawn again after the upload: one summary message, the new file count, an empty uploader.
    done = [text for text in texts(at.warning) + texts(at.success) if text.startswith("已导入")]
    assert done == ["已导入 2 个文件，失败 1 个"], done
    assert "2 个文件" in texts(at.caption)[0], texts(at.caption)
    assert not at.file_uploader[0].value and at.button(key="add_files").disabled
    failure_text = " ".join(texts(at.error))
    assert "broken.xyz" in failure_text and "alpha.txt" not in failure_text
    assert vectorized_files_in_table(at) == ["alpha.txt", "beta.md"]

    # Remove beta from the vector store only: the file stays downloadable, its vectors go.
    at.multiselect(key=f"file_select_{name}").set_value(["beta.md"]).run()
    at.button(key="remove_from_vs").click().run()
    assert not at.exception, at.exception
    assert "beta.md" not in api.list_kb_docs(name).data
    assert api.download_kb_doc(name, "beta.md").ok
    assert not api.search_kb_docs(name, file_name="beta.md").data
    assert vectorized_files_in_table(at) == ["alpha.txt"]

    # Delete alpha for good.
    at.multiselect(key=f"file_select_{name}").set_value(["alpha.txt"]).run()
    assert at.get("download_button"), "one selected file offers a download"
    at.button(key="delete_files").click().run()
    assert not at.exception, at.exception
    assert "文件删除完成" in texts(at.success)
    assert not api.download_kb_doc(name, "alpha.txt").ok
    assert not at.dataframe or "alpha.txt" not in list(at.dataframe[0].value["文档名称"])

    api.delete_knowledge_base(name)


def test_rebuild_and_edit_chunks(api):
    name = f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    assert api.upload_kb_docs([("alpha.txt", ALPHA_TEXT.encode())], name, chunk_size=60, chunk_overlap=0).ok
    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    at.number_input(key="chunk_size").set_value(60)
    at.number_input(key="chunk_overlap").set_value(0).run()

    at.button(key="rebuild").click().run()
    assert not at.exception, at.exception
    assert "向量库重建完成" in texts(at.success)
    assert at.get("progress")[0].proto.value == 100

    chunks_before = api.search_kb_docs(name, file_name="alpha.txt").data
    assert len(chunks_before) >= 2
    first = at.text_area[0]
    assert first.value in [c["page_content"] for c in chunks_before]
    first.input("The Zephyr warehouse now opens at nine.")
    at.button(key="chunk_save").click().run()
    assert not at.exception, at.exception
    after_edit = [c["page_content"] for c in api.search_kb_docs(name, file_name="alpha.txt").data]
    assert "The Zephyr warehouse now opens at nine." in after_edit
    assert len(after_edit) == len(chunks_before)

    at.checkbox(key=at.checkbox[-1].key).check()
    at.button(key="chunk_save").click().run()
    assert not at.exception, at.exception
    after_delete = api.search_kb_docs(name, file_name="alpha.txt").data
    assert len(after_delete) == len(chunks_before) - 1

    api.delete_knowledge_base(name)


def test_delete_knowledge_base_needs_confirmation(api):
    name = f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    assert at.button(key=f"kb_delete_{name}").disabled
    at.checkbox(key=f"kb_delete_confirm_{name}").check().run()
    at.button(key=f"kb_delete_{name}").click().run()
    assert not at.exception, at.exception
    assert f"成功删除知识库 {name}" in texts(at.success)
    assert name not in api.list_knowledge_bases().data
    assert name not in at.selectbox(key="kb_pick").options


def test_server_errors_show_as_messages(api):
    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(NEW_KB).run()
    at.text_input(key="new_kb_name").input("../escape")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any(e.startswith("出错了") for e in texts(at.error)), texts(at.error)
    assert "../escape" not in api.list_knowledge_bases().data


def test_a_copy_uploaded_under_another_name_is_shown_not_ingested(api):
    name = f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    files = [("alpha.txt", ALPHA_TEXT.encode(), "text/plain"), ("alpha-copy.txt", ALPHA_TEXT.encode(), "text/plain")]
    at.file_uploader[0].set_value(files).run()
    at.button(key="add_files").click().run()
    assert not at.exception, at.exception
    shown = " ".join(texts(at.info))
    assert "alpha-copy.txt** = alpha.txt" in shown, shown
    assert vectorized_files_in_table(at) == ["alpha.txt"]
    api.delete_knowledge_base(name)
