"""Start-up check of the store servers in KBS_CONFIG: a wrong setting is one line before anything starts."""

from __future__ import annotations

from server.knowledge_base.vector_stores.base import StoreSettingsError, StoreUnavailable


def check_store_servers(settings) -> list[str]:
    """Connect to every store server that is configured (or needed by DEFAULT_VS_TYPE); returns what was
    checked, raises StoreSettingsError or StoreUnavailable (one line, no secrets) for the first failure."""
    config = settings.KBS_CONFIG
    checked = []
    if config.pg.connection_uri or settings.DEFAULT_VS_TYPE == "pg":
        from server.knowledge_base.vector_stores.pg_store import connect, describe

        connect(config.pg.connection_uri).close()
        checked.append(f"pg {describe(config.pg.connection_uri)}")
    for vs_type in ("milvus", "zilliz"):
        milvus = getattr(config, vs_type)
        if not (milvus.uri or milvus.host) and settings.DEFAULT_VS_TYPE != vs_type:
            continue
        if vs_type == "zilliz" and not (milvus.uri and milvus.token):
            raise StoreSettingsError("vs_type 'zilliz' needs KBS_CONFIG.zilliz.uri and KBS_CONFIG.zilliz.token")
        if not (milvus.uri or milvus.host):
            continue  # Milvus Lite: a file per knowledge base, nothing to reach
        from pymilvus import MilvusClient, MilvusException

        from server.knowledge_base.vector_stores.milvus_store import client_options

        options, address, _ = client_options(milvus, None)
        try:
            MilvusClient(**options).close()
        except MilvusException as exc:
            raise StoreUnavailable(f"cannot connect to Milvus at {address} (KBS_CONFIG.{vs_type}): {exc.message}") from None
        checked.append(f"{vs_type} {address}")
    return checked
