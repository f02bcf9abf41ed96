"""Response envelopes of the Chatchat 0.2.x wire contract.

Application errors travel in ``code``/``msg`` with HTTP status 200, because existing
clients read ``code`` from the body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class BaseResponse(BaseModel):
    code: int = 200
    msg: str = "success"
    data: Any = None


class ListResponse(BaseResponse):
    data: list[str] = []
