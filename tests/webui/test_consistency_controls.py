"""The knowledge-base page's check and repair buttons, against the real API server."""

from __future__ import annotations

import uuid

from tests.webui.support import ALPHA_TEXT, BETA_TEXT, texts
from tests.webui.test_knowledge_base_page import api, open_kb_page  # noqa: F401 (api is a fixture)


def test_check_shows_the_problems_and_repair_fixes_them(api, api_server):  # noqa: F811
    name = f"ui_{uuid.uuid4().hex[:8]}"
    assert api.create_knowledge_base(name).ok
    files = [("alpha.txt", ALPHA_TEXT.encode()), ("beta.md", BETA_TEXT.encode())]
    assert api.upload_kb_docs(files, name).ok
    (api_server.kb_root / name / "content" / "beta.md").unlink()  # removed by hand: still listed and searchable

    at = open_kb_page()
    at.selectbox(key="kb_pick").set_value(name).run()
    assert at.button(key="kb_repair").disabled
    at.button(key="kb_check").click().run()
    assert not at.exception, at.exception
    assert "发现 1 处不一致" in texts(at.warning)
    [problems] = [frame.value for frame in at.dataframe if "问题" in frame.value.columns]
    assert list(problems["文档名称"]) == ["beta.md"]

    at.button(key="kb_repair").click().run()
    assert not at.exception, at.exception
    assert "已修复 1 处不一致" in texts(at.success)
    assert api.list_kb_docs(name).data == ["alpha.txt"]
    api.delete_knowledge_base(name)
