"""The lenient protocol: this project's forgiving parser (``methods/parsing.py``) in the loop of
``methods/agent.py`` (``AgentLoop.episode``), the only protocol before seed-exact ones existed.

What it changes against the seeds' loops (``react.py``, ``fireact.py``):
- an action is found under any step number and in any case (``Action 3:`` at step 2, ``action:``,
  a bare ``Search[x]``), and only its first line is kept, cut at its closing bracket: ReAct would
  repair the first and send the whole multi-line text to the environment (an invalid action);
- a text with no action gets one repair prompt (the thought, then ``Action:``), one line, at most
  ``min(--max_tokens, 96)`` tokens, instead of FireAct's up to 5 regenerations without a stop;
- one stop for every style (``\\nObservation``), thoughts and observations flattened to one line,
  unknown verbs observed as ``Invalid action: ... Valid actions are ...``;
- defaults ``--max_steps 11``, ``--max_tokens 256``.
It also runs the methods no seed defines a loop for (act, reflexion, io, cot) and the chat format.
"""
from . import Protocol, register_protocol


@register_protocol("lenient")
class LenientProtocol(Protocol):
    name = "lenient"

    def episode(self, loop, state):
        return loop.episode(state)
