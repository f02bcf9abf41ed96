"""The same hostile upload with PARSE_TIMEOUT_SECONDS on: files are parsed in a supervised child process of the
server, and each hostile file still fails alone, naming its limit, while the good file is searchable."""

from __future__ import annotations

from tests.api.test_untrusted_uploads import (  # noqa: F401 - pytest collects these fixtures and tests here too
    test_a_rebuild_meets_the_same_limits,
    test_each_hostile_file_fails_naming_its_limit,
    test_the_database_keeps_the_reason,
    test_the_good_file_of_the_same_upload_is_searchable,
    test_the_server_keeps_answering,
    uploaded,
)

SERVER_ENV = {"CHATCHAT_PARSE_TIMEOUT_SECONDS": "120"}
