"""The agent's tools, as LangChain tools: calculator, knowledge-base search, web search, and
a shell tool that exists only when AGENT_SHELL_ENABLED is set."""

from __future__ import annotations

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from configs import get_settings
from server.chat.tools.calculator import calculate
from server.chat.tools.knowledge_base import search_knowledge_base
from server.chat.tools.shell import run_shell
from server.chat.tools.web_search import search_internet


class CalculatorInput(BaseModel):
    expression: str = Field(description="an arithmetic expression, e.g. (3 + 4) * 2 or sqrt(2) ** 3")


class KnowledgeBaseInput(BaseModel):
    query: str = Field(description="what to look for")
    knowledge_base_name: str = Field("", description="knowledge base to search; empty: the default one")


class WebSearchInput(BaseModel):
    query: str = Field(description="what to search the web for")


class ShellInput(BaseModel):
    command: str = Field(description="a shell command")


def build_tools() -> list[StructuredTool]:
    tools = [
        StructuredTool.from_function(
            calculate,
            name="calculator",
            description="Evaluates arithmetic exactly. Use it for any calculation.",
            args_schema=CalculatorInput,
        ),
        StructuredTool.from_function(
            search_knowledge_base,
            name="search_knowledge_base",
            description="Searches the local knowledge base and returns the most relevant passages.",
            args_schema=KnowledgeBaseInput,
        ),
        StructuredTool.from_function(
            search_internet,
            name="search_internet",
            description="Searches the internet and returns titles, links and snippets.",
            args_schema=WebSearchInput,
        ),
    ]
    if get_settings().AGENT_SHELL_ENABLED:
        tools.append(
            StructuredTool.from_function(
                run_shell,
                name="shell",
                description="Runs a shell command on the server and returns its output.",
                args_schema=ShellInput,
            )
        )
    return tools
