"""Settings of the stack: ``from configs import get_settings``."""

from configs.settings import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_LLM_MODEL,
    PROJECT_ROOT,
    VERSION,
    ModelWorkerConfig,
    OnlineModelConfig,
    ServerAddress,
    Settings,
    get_settings,
    in_ui_language,
    reload_settings,
)

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_LLM_MODEL",
    "PROJECT_ROOT",
    "VERSION",
    "ModelWorkerConfig",
    "OnlineModelConfig",
    "ServerAddress",
    "Settings",
    "get_settings",
    "in_ui_language",
    "reload_settings",
]
