"""Model management for the API server: what runs, what is configured, stop and change.

The controller address always comes from settings (FSCHAT_CONTROLLER). Chatchat 0.2.10 used
the ``controller_address`` a client sent, so any client could make the server POST to any
URL; the routes still accept that field for compatibility and ignore it.

Stop and change go to the worker that serves the model (found through the controller):
``/worker_release`` makes it unregister and exit (``startup.py`` reports it as stopped on
request), ``/worker_change_model`` makes it release its model and load the new one in the
same process and port, then register under the new name.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from configs import ModelWorkerConfig, Settings, get_settings
from server.model_workers.model_paths import configured_device, find_local_model, list_local_models

logger = logging.getLogger(__name__)

HIDDEN_MARKERS = ("key", "secret", "token", "password", "api_base_url", "proxy")


class ControllerError(RuntimeError):
    pass


def controller_address(settings: Settings | None = None) -> str:
    return (settings or get_settings()).FSCHAT_CONTROLLER.url.rstrip("/")


def _public(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not any(m in k.lower() for m in HIDDEN_MARKERS)}


def get_model_config(model_name: str, settings: Settings | None = None) -> dict[str, Any]:
    """Merged configuration of a model (worker defaults < online entry < FSCHAT_MODEL_WORKERS), without secrets."""
    settings = settings or get_settings()
    config: dict[str, Any] = ModelWorkerConfig(device=settings.LLM_DEVICE).model_dump()
    online = settings.ONLINE_LLM_MODEL.get(model_name)
    if online is not None:
        config.update(online.model_dump())
    worker = settings.FSCHAT_MODEL_WORKERS.get(model_name)
    if worker is not None:
        config.update(worker.model_dump(exclude_unset=True))
    if online is None:
        config["device"] = configured_device(model_name, settings)
    config["online_api"] = online is not None
    local = None if online is not None else find_local_model(model_name, settings)
    config["model_path"] = local.display_path if local else ""
    config["model_path_exists"] = local is not None
    return _public(config)


def list_config_models(types: list[str], settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    settings = settings or get_settings()
    result: dict[str, dict[str, Any]] = {}
    if "local" in types:
        result["local"] = {name: get_model_config(name, settings) for name in list_local_models(settings)}
    if "online" in types:
        result["online"] = {name: get_model_config(name, settings) for name in settings.ONLINE_LLM_MODEL}
    if "worker" in types:
        result["worker"] = {
            name: _public(config.model_dump(exclude_unset=True))
            for name, config in settings.FSCHAT_MODEL_WORKERS.items()
            if name != "default"
        }
    return result


async def _controller(client: httpx.AsyncClient, path: str, payload: dict | None = None) -> Any:
    response = await client.post(controller_address() + path, json=payload)
    response.raise_for_status()
    return response.json() if response.content else None


async def worker_address(client: httpx.AsyncClient, model_name: str) -> str:
    data = await _controller(client, "/get_worker_address", {"model": model_name})
    return (data or {}).get("address") or ""


async def _worker_health(client: httpx.AsyncClient, address: str) -> dict[str, Any]:
    try:
        response = await client.get(address + "/health", timeout=5)
        return response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}  # a stock FastChat worker has no /health


async def list_running_models(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """LLMs the controller knows now (embedding workers left out), each with its config and device."""
    settings = settings or get_settings()
    async with httpx.AsyncClient(timeout=15) as client:
        await _controller(client, "/refresh_all_workers")  # drops workers that died without unregistering
        with_workers = await _controller(client, "/list_models")
        names = sorted((with_workers or {}).get("models") or [])
        addresses = await asyncio.gather(*(worker_address(client, n) for n in names))
        healths = await asyncio.gather(*(_worker_health(client, a) if a else _empty() for a in addresses))
    running: dict[str, dict[str, Any]] = {}
    for name, health in zip(names, healths, strict=True):
        if health.get("kind") == "embeddings":
            continue
        config = get_model_config(name, settings)
        if health.get("device"):
            config["device"] = health["device"]
        if health.get("backend"):
            config["backend"] = health["backend"]
        if health.get("context_length"):
            config["context_length"] = health["context_length"]
        config["running"] = True
        running[name] = config
    return running


async def _empty() -> dict:
    return {}


async def stop_model(model_name: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    async with httpx.AsyncClient(timeout=30) as client:
        address = await worker_address(client, model_name)
        if not address:
            return {"code": 500, "msg": f"can not find model_worker address for {model_name}"}
        response = await client.post(address + "/worker_release", json={"model_name": model_name})
        response.raise_for_status()
        return response.json()


async def change_model(model_name: str, new_model_name: str, settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    if model_name == new_model_name:
        return {"code": 200, "msg": f"{model_name} is already running"}
    async with httpx.AsyncClient(timeout=settings.HTTPX_DEFAULT_TIMEOUT) as client:
        running = ((await _controller(client, "/list_models")) or {}).get("models") or []
        if new_model_name in running:
            return {"code": 500, "msg": f"要切换的LLM模型 {new_model_name} 已经存在"}
        address = await worker_address(client, model_name)
        if not address:
            return {"code": 500, "msg": f"can not find model_worker address for {model_name}"}
        response = await client.post(address + "/worker_change_model", json={"new_model_name": new_model_name})
        response.raise_for_status()
        return response.json()
