"""Default prompt templates, per chat mode, in Jinja2 syntax.

Variables: ``{{ input }}`` for LLM chat; ``{{ context }}`` and ``{{ question }}`` for the
retrieval modes (knowledge base, file, search engine). Override any of them in settings.
"""

DEFAULT_PROMPT_TEMPLATES: dict[str, dict[str, str]] = {
    "llm_chat": {
        "default": "{{ input }}",
        "with_history": (
            "The following is a friendly conversation between a human and an AI. "
            "The AI is talkative and provides lots of specific details from its context. "
            "If the AI does not know the answer to a question, it truthfully says it does not know.\n\n"
            "Current conversation:\n{{ history }}\nHuman: {{ input }}\nAI:"
        ),
        "py": "你是一个聪明的代码助手，请你给我写出简单的py代码。 \n{{ input }}",
    },
    "knowledge_base_chat": {
        "default": (
            "<指令>根据已知信息，简洁和专业的来回答问题。如果无法从中得到答案，请说 “根据已知信息无法回答该问题”，"
            "不允许在答案中添加编造成分，答案请使用中文。 </指令>\n"
            "<已知信息>{{ context }}</已知信息>\n<问题>{{ question }}</问题>\n"
        ),
        "text": (
            "<指令>根据已知信息，简洁和专业的来回答问题。如果无法从中得到答案，请说 “根据已知信息无法回答该问题”，"
            "答案请使用中文。 </指令>\n<已知信息>{{ context }}</已知信息>\n<问题>{{ question }}</问题>\n"
        ),
        "english": (
            "Answer the question using only the context below. If the context does not contain the answer, "
            "say that you cannot answer from the given information.\n\n"
            "Context:\n{{ context }}\n\nQuestion: {{ question }}\nAnswer:"
        ),
        "empty": ("请你回答我的问题:\n{{ question }}\n\n"),
    },
    "search_engine_chat": {
        "default": (
            "<指令>这是我搜索到的互联网信息，请你根据这些信息进行提取并有调理，简洁的回答问题。"
            "如果无法从中得到答案，请说 “无法搜索到能回答问题的内容”。 </指令>\n"
            "<已知信息>{{ context }}</已知信息>\n<问题>{{ question }}</问题>\n"
        ),
        "search": (
            "<指令>根据已知信息，简洁和专业的来回答问题。如果无法从中得到答案，请说 “根据已知信息无法回答该问题”，"
            "答案请使用中文。 </指令>\n<已知信息>{{ context }}</已知信息>\n<问题>{{ question }}</问题>\n"
        ),
    },
    "agent_chat": {
        # ReAct text, so models without function calling (what FastChat serves) can use tools too.
        "default": (
            "Answer the question as well as you can. You have these tools:\n\n{{ tools }}\n\n"
            "To use a tool, reply exactly in this form and stop:\n"
            "Thought: why a tool helps\nAction: one of [{{ tool_names }}]\nAction Input: the input, as JSON\n\n"
            'You will then receive "Observation: <the tool\'s result>". '
            "When you know the answer, reply:\nFinal Answer: the answer\n\n"
            "Question: {{ input }}"
        ),
    },
    "completion": {
        "default": "{{ input }}",
    },
}
