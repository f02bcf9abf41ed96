"""``/llm_model/...`` routes, wire-compatible with Chatchat 0.2.x.

``controller_address`` is accepted and ignored: the controller comes from settings only
(Chatchat let clients make the server POST to any URL through it).
"""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, Body

from server.llm_model import service
from server.responses import BaseResponse

logger = logging.getLogger(__name__)
router = APIRouter(tags=["LLM Model Management"])

IGNORED_ADDRESS = Body(None, description="ignored: the controller address comes from the server's settings")


@router.post("/list_running_models", summary="列出当前已加载的模型")
async def list_running_models(
    controller_address: str | None = IGNORED_ADDRESS, placeholder: str | None = Body(None)
) -> BaseResponse:
    try:
        return BaseResponse(data=await service.list_running_models())
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("list_running_models failed: %s", exc)
        return BaseResponse(
            code=500,
            data={},
            msg=f"failed to get available models from controller: {service.controller_address()}。错误信息是： {exc}",
        )


@router.post("/list_config_models", summary="列出configs已配置的模型")
async def list_config_models(
    types: list[str] = Body(["local", "online"], description="模型配置项类别，如local, online, worker"),
    placeholder: str | None = Body(None),
) -> BaseResponse:
    return BaseResponse(data=service.list_config_models(types))


@router.post("/get_model_config", summary="获取模型配置（合并后）")
async def get_model_config(
    model_name: str = Body(description="配置中LLM模型的名称"), placeholder: str | None = Body(None)
) -> BaseResponse:
    return BaseResponse(data=service.get_model_config(model_name))


@router.post("/stop", summary="停止指定的LLM模型（Model Worker)")
async def stop_llm_model(
    model_name: str = Body(description="要停止的LLM模型名称"), controller_address: str | None = IGNORED_ADDRESS
) -> BaseResponse:
    try:
        result = await service.stop_model(model_name)
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("stop %s failed: %s", model_name, exc)
        return BaseResponse(
            code=500,
            msg=f"failed to stop LLM model {model_name} from controller: {service.controller_address()}。"
            f"错误信息是： {exc}",
        )
    return BaseResponse(code=result.get("code", 200), msg=result.get("msg", "success"))


@router.post("/change", summary="切换指定的LLM模型（Model Worker)")
async def change_llm_model(
    model_name: str = Body(description="当前运行模型"),
    new_model_name: str = Body(description="要切换的新模型"),
    controller_address: str | None = IGNORED_ADDRESS,
) -> BaseResponse:
    try:
        result = await service.change_model(model_name, new_model_name)
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("change %s -> %s failed: %s", model_name, new_model_name, exc)
        return BaseResponse(
            code=500,
            msg=f"failed to switch LLM model from controller: {service.controller_address()}。错误信息是： {exc}",
        )
    return BaseResponse(code=result.get("code", 200), msg=result.get("msg", "success"))
