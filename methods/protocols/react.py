"""ReAct's protocol: the ``webthink`` loop of the ReAct paper's ``hotpotqa.ipynb`` (Yao et al., 2023, MIT),
with its ``wikienv.py`` / ``wrappers.py`` step semantics, for its Wikipedia prompts (``webthink_simple6``).

Rules reproduced, in the notebook's order:

1. The prompt: instruction + exemplars + ``Question: <q>\\n``; step i asks ``prompt + "Thought {i}:"``
   with the stop ``"\\nObservation {i}:"`` (numbered: an ``Observation 3:`` written at step 2 does not stop
   it) and at most 100 tokens (``--max_tokens`` default), greedy (text-davinci-002 at temperature 0).
2. Steps i = 1..7 (``--max_steps`` default 7).
3. ``thought, action = text.strip().split(f"\\nAction {i}: ")``: exactly two parts, under this step's
   number. Anything else (no such line, another step's number, two such lines) is a bad call:
4. the repair: ``thought = text.strip().split("\\n")[0]``, then ``prompt + f"Thought {i}: {thought}\\nAction
   {i}:"`` with the stop ``"\\n"`` (one line) and the same token budget; ``action = that.strip()``.
5. The environment gets the whole action string, its first letter lower-cased
   (``action[0].lower() + action[1:]``), stripped; ``search[X]`` / ``lookup[X]`` / ``finish[X]`` /
   ``think[X]`` only when it starts with that and ends with ``]``, X being everything between (so an
   action followed by more lines is an invalid action); else ``Invalid action: <action>``.
   ``think[...]`` answers ``Nice thought.``; ``lookup`` past the end answers ``No more results.\\n``
   (with its newline, which leaves a blank line in the prompt).
6. ``finish[X]`` ends the episode with answer X and the observation ``Episode finished, reward = <0|1>\\n``
   (the wrapper's integer EM).
7. Every observation has literal ``\\n`` (backslash, n) sequences removed (``obs.replace('\\\\n', '')``).
8. The step is appended as ``Thought {i}: {thought}\\nAction {i}: {action}\\nObservation {i}: {obs}\\n``,
   the action as the model wrote it (first letter not lowered).
9. Seven steps without ``finish``: the notebook steps the environment with ``finish[]`` (answer "",
   not shown in the prompt); the episode here ends unfinished, scored as the answer "" (EM 0).

Search and lookup are this project's Wikipedia tool (offline index or the MediaWiki API), which
follows ``wikienv.py`` (first 5 sentences, ``Could not find X. Similar: [...]``, ``(Result i / n)``).

Deliberate differences (documented, no flag: the seed has no behaviour worth reproducing there):
- an empty action (the repair wrote nothing) crashes the notebook (``action[0]``, IndexError); here it
  is the invalid action ``""`` (observation ``Invalid action: ``).
- the stop string is cut by the backend as the OpenAI API cut it; a tool fault surviving the retries
  is shown as ``Tool error: ...`` (the notebook retried timeouts only).
"""
from __future__ import annotations

from fireharness.records import Step

from . import Protocol, ProtocolError, record_tool_call, register_protocol

VERBS = ("search", "lookup", "finish", "think")  # wikienv.step's, in its order


def parse_react(text: str, i: int):
    """(thought, action) by the notebook's exact split, or None (a bad call: repair)."""
    parts = text.strip().split(f"\nAction {i}: ")
    return tuple(parts) if len(parts) == 2 else None


def env_action(action: str) -> tuple[str, str, str]:
    """(verb, argument, what the environment got) as wikienv.step reads ``action[0].lower() + action[1:]``;
    verb "" = an invalid action."""
    a = (action[:1].lower() + action[1:]).strip()
    for verb in VERBS:
        if a.startswith(verb + "[") and a.endswith("]"):
            return verb, a[len(verb) + 1:-1], a
    return "", "", a


@register_protocol("react")
class ReActProtocol(Protocol):
    name = "react"
    max_steps = 7
    max_tokens = 100

    def check(self, method, fmt):
        if method.name != "react" or fmt != "text" or not method.style.numbered:
            raise ProtocolError("--protocol react is ReAct's webthink loop: --method react with a numbered "
                                "(Wikipedia, webthink_*) text prompt; use --protocol lenient or fireact")

    def episode(self, loop, s):
        from methods.agent import Act, Ask

        m, budget = loop.method, loop.max_tokens
        for i in range(1, m.max_steps + 1):
            prompt = m.prompt(s)  # ... + "Thought {i}:"
            g = yield Ask(prompt, [f"\nObservation {i}:"], budget)
            if g.error:
                return
            parsed, repaired = parse_react(g.text, i), False
            if parsed is None:
                thought = g.text.strip().split("\n")[0]
                fix = yield Ask(f"{prompt} {thought}\nAction {i}:", ["\n"], budget)
                if fix.error:
                    return
                parsed, repaired = (thought, fix.text.strip()), True
            thought, action = parsed
            verb, argument, sent = env_action(action)
            step = Step(thought=thought, action=action, action_type=verb, argument=argument, raw=g.text,
                        repaired=repaired)
            if verb == "finish":
                loop.finish(s, step)
                step.observation = f"Episode finished, reward = {_reward_int(s.reward)}\n"
            elif verb == "think":
                step.observation = "Nice thought."
            elif verb and loop.tool is not None and verb in loop.tool.verbs:
                obs = yield Act(verb, argument)
                record_tool_call(loop, s, step, obs)
                text = obs.text
                if text == "No more results.":  # wikienv's lookup writes it with a newline
                    text += "\n"
                step.observation = text
            else:
                step.observation = f"Invalid action: {sent}"
            if step.observation is not None:
                step.observation = step.observation.replace("\\n", "")
            s.steps.append(step)
            loop.steps_taken += 1
            if s.done:
                return
        # The notebook's env.step("finish[]"): answer "", scored, not shown in the prompt. The record keeps
        # prediction None (no answer given), as every unfinished Episode does.
        if loop.evaluate and loop.task is not None:
            s.reward, s.score = loop.task.evaluate(s.index, "")
        s.error = f"no answer within --max_steps {m.max_steps}: finish[] (ReAct)"
        s.done = True


def _reward_int(reward) -> object:
    return int(reward) if isinstance(reward, (bool, float)) and float(reward) in (0.0, 1.0) else reward
