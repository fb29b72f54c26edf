"""Reflexion-style ReAct: when an episode has not finished by given steps (FireAct: 6 and 10),
the agent first writes a self-reflection on its trajectory so far, which opens its next thought.

FireAct's loop kept a ``reflection`` placeholder that is prepended to the next thought; here the
model writes it, from a cue, in one extra batched generation.
"""
from .base import Method, register_method

REFLECTION_CUE = ("I have not found the answer after {n} steps. Reflecting on what went wrong so far and "
                  "what to try next:")


@register_method("reflexion")
class Reflexion(Method):
    name = "reflexion"

    def __init__(self, *, reflect_at=(6, 10), **kwargs):
        super().__init__(reflect_at=reflect_at or (6, 10), **kwargs)

    def needs_reflection(self, state):
        return (len(state.steps) + 1) in self.reflect_at and state.reflection is None

    def reflection_prompt(self, state):
        cue = REFLECTION_CUE.format(n=len(state.steps))
        if self.fmt == "chat":
            return self.chat_messages(state) + [{"role": "user", "content": "Thought: " + cue}]
        return self.prompt(state) + " " + cue

    def reflection_stop(self):
        return ["\n"]

    def reflection_text(self, state, text):
        return REFLECTION_CUE.format(n=len(state.steps)) + " " + " ".join(text.split())
