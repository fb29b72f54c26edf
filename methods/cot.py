"""CoT (Wei et al., 2022): a chain of thought, then the answer; no tools."""
from .base import register_method
from .io import IO
from .parsing import parse_answer


@register_method("cot")
class CoT(IO):
    name = "cot"
    prompt_method = "cot"

    def cue(self, state):
        return "Thought:"

    def parse(self, text, state):
        return parse_answer(text)
