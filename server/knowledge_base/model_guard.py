"""The embedding-model drift guard: a knowledge base is only used with the model that made its vectors.

Each knowledge base records the fingerprint (name, dimension, weights digest) of its model when it is
created or rebuilt. If the model behind that name changes (new weights under the same folder, another
EMBEDDING_MODEL_PATHS entry, another dimension), searching or adding to the knowledge base is refused
with the command that rebuilds it, instead of mixing vectors of two models silently.
A knowledge base from before the guard (no fingerprint yet) adopts the current model's at first use.
"""

from __future__ import annotations

from server.db.repositories import knowledge_base as kb_repo
from server.db.repositories.knowledge_base import KnowledgeBaseRecord
from server.knowledge_base.embeddings import EmbeddingBackend
from server.knowledge_base.embeddings.fingerprint import ModelFingerprint, model_fingerprint


class EmbeddingModelChanged(RuntimeError):
    """The knowledge base's vectors were made by another model than the one now behind its name."""

    def __init__(self, kb_name: str, stored: ModelFingerprint, current: ModelFingerprint):
        self.kb_name, self.stored, self.current = kb_name, stored, current
        super().__init__(
            f"knowledge base '{kb_name}' was built with embedding model {stored.short()}, but that name now "
            f"gives {current.short()}; vectors of two models cannot be mixed. Rebuild it with the current "
            f"model: python init_database.py --recreate-vs --kb-name {kb_name} "
            "(or restore the previous model files)"
        )


def check_kb_model(kb: KnowledgeBaseRecord, backend: EmbeddingBackend | None = None) -> None:
    """Raise EmbeddingModelChanged when the model behind kb.embed_model is not the one recorded.

    Without ``backend`` only the weights are compared (nothing is loaded); with it, the dimension too.
    """
    dimension = backend.dimension if backend is not None else None
    current = model_fingerprint(kb.embed_model, dimension)
    stored = ModelFingerprint.from_json(kb.embed_fingerprint)
    if stored is not None and stored.weights != current.weights:
        # The caller's record may predate a rebuild that recorded the current model: ask the database.
        fresh = kb_repo.get_kb(kb.kb_name)
        stored = ModelFingerprint.from_json(fresh.embed_fingerprint) if fresh else stored
    if stored is None:
        if dimension is not None:  # adopt: older knowledge bases have no fingerprint yet
            kb_repo.set_embed_fingerprint(kb.kb_name, current.to_json())
        return
    same_dimension = stored.dimension is None or dimension is None or stored.dimension == dimension
    if stored.name != kb.embed_model or stored.weights != current.weights or not same_dimension:
        raise EmbeddingModelChanged(kb.kb_name, stored, ModelFingerprint(current.name, current.weights, dimension))
    if stored.dimension is None and dimension is not None:
        kb_repo.set_embed_fingerprint(kb.kb_name, current.to_json())


def record_kb_model(kb_name: str, embed_model: str, backend: EmbeddingBackend | None = None) -> None:
    """Record the current model as the one this knowledge base's vectors come from (create, rebuild)."""
    dimension = backend.dimension if backend is not None else None
    kb_repo.set_embed_fingerprint(kb_name, model_fingerprint(embed_model, dimension).to_json())
