"""Model management routes of the API server (``/llm_model/...``)."""
