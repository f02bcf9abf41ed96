"""Model worker processes that register with the FastChat controller.

- ``transformers_worker``: local Hugging Face / GGUF chat models (optionally vLLM on CUDA).
- ``proxy_worker``: any OpenAI-compatible upstream configured in ONLINE_LLM_MODEL.
- ``embedding_worker``: the configured embedding models, for ``/v1/embeddings``.
- ``model_paths``: which folder or GGUF file serves a model name.
"""
