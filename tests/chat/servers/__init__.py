"""Local servers that speak public protocols (OpenAI chat, SearXNG, an HTTP proxy) for the chat tests."""
