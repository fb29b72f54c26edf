"""RAG: retrieve the top k passages for the question, then answer in one step (between IO and ReAct).

The loop runs ``search[question]`` before the first generation (``opening_actions``); the episode
records it as its first step (tool, source and passages, as any tool step). The prompt is the task's
IO few-shot prompt with the passages put before the question:

    <IO few-shot>Context: [1] Title: text [2] ...
    <question>
    Answer:

Use it with the retrieve tool (``--tool retrieve --retriever hybrid --top_k 3``) or any tool with ``search``.
"""
from .base import register_method
from .io import IO


@register_method("rag")
class RAG(IO):
    name = "rag"
    prompt_method = "io"
    uses_tools = True

    def opening_actions(self, state):
        return [("search", state.question)]

    def question_text(self, state):
        retrieved = state.steps[0].shown_observation() if state.steps else ""
        context = f"Context: {retrieved}\n" if retrieved else ""
        return context + self.question_prefix + state.question

    def history(self, state):
        return ""  # the retrieval is shown as the context, not as a Thought/Action/Observation step

    def chat_messages(self, state):
        messages = [{"role": "system", "content": self.fewshot.text.strip()}] if self.fewshot.text.strip() else []
        return messages + [{"role": "user", "content": self.question_text(state)}]
