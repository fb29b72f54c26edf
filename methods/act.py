"""Act: the ReAct paper's ablation, actions and observations without thoughts."""
from .base import Method, register_method
from .parsing import parse_step


@register_method("act")
class Act(Method):
    name = "act"
    prompt_method = "act"
    uses_thoughts = False

    def cue(self, state):
        return self.style.label("Action", len(state.steps) + 1)

    def parse(self, text, state):
        return parse_step("Action: " + text.strip())

    def repair_prompt(self, state, parsed):
        return None  # the cue already asks for the action alone
