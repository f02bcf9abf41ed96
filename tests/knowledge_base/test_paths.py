"""Names that would reach outside the data root are refused."""

import os

import pytest

from server.knowledge_base import paths

HOSTILE_KB_NAMES = ["..", "../x", "/etc", "a/b", "a\\b", "x\x00y", "%", "kb%", "", " ", ".hidden", "..%2F..", " kb"]
HOSTILE_FILE_NAMES = ["../x.txt", "/etc/passwd", "a/../../x.txt", "C:\\x.txt", "a\\..\\x.txt", "x\x00.txt", "dir/"]


@pytest.mark.parametrize("name", HOSTILE_KB_NAMES)
def test_hostile_kb_names_are_refused(kb_root, name):
    with pytest.raises(paths.UnsafeName):
        paths.validate_kb_name(name)


@pytest.mark.parametrize("name", ["samples", "知识库", "kb_for_api_test", "my kb"])
def test_ordinary_kb_names_pass(kb_root, name):
    assert paths.kb_path(name) == kb_root / name


@pytest.mark.parametrize("name", HOSTILE_FILE_NAMES)
def test_hostile_file_names_are_refused(kb_root, name):
    with pytest.raises(paths.UnsafeName):
        paths.file_path("samples", name)


def test_sub_folders_are_allowed(kb_root):
    assert paths.file_path("samples", "wiki/Home.md") == kb_root / "samples" / "content" / "wiki" / "Home.md"


def test_symlink_leaving_content_is_refused_and_not_listed(kb_root, tmp_path):
    content = kb_root / "samples" / "content"
    content.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, content / "link.txt")
    (content / "inside.txt").write_text("fine")
    with pytest.raises(paths.UnsafeName):
        paths.file_path("samples", "link.txt")
    assert paths.list_content_files("samples") == ["inside.txt"]


def test_kb_folder_symlink_outside_root_is_refused(kb_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, kb_root / "linked")
    with pytest.raises(paths.UnsafeName):
        paths.validate_kb_name("linked")


def test_temp_and_hidden_files_are_skipped(kb_root):
    content = kb_root / "kb" / "content"
    (content / "sub").mkdir(parents=True)
    for name in ["a.md", "sub/b.txt", ".hidden.md", "~$lock.docx", "tmp_x.txt", "sub/.git/config"]:
        (content / name).parent.mkdir(parents=True, exist_ok=True)
        (content / name).write_text("x")
    assert paths.list_content_files("kb") == ["a.md", "sub/b.txt"]
