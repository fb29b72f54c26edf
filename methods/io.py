"""IO: the answer alone, from few-shot question/answer pairs."""
from .base import Method, register_method
from .parsing import parse_answer


@register_method("io")
class IO(Method):
    name = "io"
    prompt_method = "io"
    uses_tools = False

    def cue(self, state):
        # The fine-tuned (alpaca) format knows only Thought/Action: it answers with finish[...].
        return "Thought:" if self.fmt == "alpaca" else "Answer:"

    def stop(self):
        return ["\n\n", "\nQuestion", "\nObservation"]

    def parse(self, text, state):
        if self.fmt != "alpaca" and not text.lstrip().lower().startswith(("answer", "thought")):
            text = "Answer: " + text.strip()
        return parse_answer(text)

    def repair_prompt(self, state, parsed):
        return None
