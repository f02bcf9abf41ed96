"""Chat modes of the API server: LLM, knowledge base, file, search engine, agent."""
