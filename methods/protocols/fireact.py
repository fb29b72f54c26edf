"""FireAct's protocol: the loop of FireAct's ``generation.py`` (``run``) with ``models/llama.py``'s text
handling (Chen et al., 2023, MIT), for its Google prompts (``react_hotpotqa_google`` ...) and its
fine-tuned models' Alpaca format.

Rules reproduced, per episode (FireAct runs them in lock-step batches; an episode's trajectory does not
depend on the others'):

1. The prompt: few-shot + question + ``\\n`` (Alpaca: FireAct's ``prepare_prompt(question)``), then the
   steps so far; each iteration asks ``prompt + "Thought:"`` with the stop ``"\\nObservation:"`` and at most
   1,000 tokens (``--max_tokens`` default; llama.py's ``max_tokens=1000``), greedy.
2. At most 11 iterations (``--max_steps`` default).
3. Every generated text that starts with ``Thought: `` loses it (llama.py).
4. A text without ``Action: `` is generated again from the prompt *without* the ``Thought:`` cue and
   with no stop, up to 5 times; still without ``Action: `` after the 5th, it becomes
   ``Thought: failed\\nAction: finish[]``.
5. Splitting: if ``"\\nAction: "`` is in the stripped text, ``thought, action =
   text.strip().split("\\nAction: ")[:2]`` (the action runs to the next ``\\nAction: ``, lines and all);
   elif ``"Action: "`` is in it, ``thought = ""`` and ``action = text[len("Action: "):]`` (of the
   unstripped text); else ``thought = text.split("\\n")[0]`` and the repair below.
6. The repair (reached only by a text whose one ``Action: `` ends it): ``prompt + f"Thought:
   {prune_thought(thought)}\\nAction:"`` with the stop ``"\\nObservation:"``; ``action = that.strip()``.
7. ``prune_thought``: a thought starting with ``Thought:`` loses it and is stripped.
8. ``action_type, action_args = action.split('[')[:2]``; ``action_args = action_args[:-1]`` (the last
   character dropped, whatever it is). An action without ``[`` is skipped: no step is written, the
   prompt stays as it was and the iteration is spent (greedy, the next one asks the same prompt).
9. ``"finish" in action_type.lower()``: the episode ends with answer ``action_args``, observation
   ``Episode finished, reward = {r}`` (``True``/``False`` for HotpotQA; ``True`` without ``--evaluate``).
10. Else ``call_tools(action_type, action_args)``: only ``search`` exists (exact, case-sensitive);
    anything else is observed as ``('lookup', 'x') generated an exception: Unknown tool name: lookup``,
    and a tool fault as ``('search', 'x') generated an exception: <fault>``.
11. The step is appended as ``Thought: {prune_thought(thought)}\\nAction: {action}\\nObservation: {obs}\\n``.

Deliberate differences, each a switch or noted:
- A search that found nothing (SerpAPI's null): FireAct's prompt says ``None``; here
  ``No results found for 'q'.`` unless ``--empty_result none`` (the seed's). The shipped offline cache
  holds no null result, so this only matters for a cache written live.
- Offline, a query the cache lacks is answered with our "No cached Google result ..." line (FireAct
  would ask SerpAPI); ``--online`` asks. The query is stripped before the cache lookup (FireAct looks it up
  as written; the cache has no key with surrounding spaces).
- FireAct drops unfinished episodes from its output file; here every episode is kept (unfinished).
- Stops: llama.py stops when the last token ids equal ``tokenizer.encode("\\nObservation:")[-5:]`` and
  then cuts the string; the backends here cut at the first occurrence of the string. The same text
  where the model writes the stop with the tokens its standalone encoding has (SmolLM2 and Llama-2's
  tokenizers keep ``\\n`` a token of its own; a run of newlines ``\\n\\nObservation:`` differs).
- Chat format (``--chatgpt_format``) is not run by this protocol (FireAct's chat path sends no stop and
  has no repair): use ``--protocol lenient``.
"""
from __future__ import annotations

from fireharness.records import Step

from . import Protocol, ProtocolError, none_if_empty, record_tool_call, register_protocol

REGENERATIONS = 5
FAILED = "Thought: failed\nAction: finish[]"


def strip_thought_label(text: str) -> str:
    """llama.py: a generation that starts with "Thought: " loses it."""
    return text[len("Thought: "):] if text.startswith("Thought: ") else text


def prune_thought(thought: str) -> str:
    return thought[len("Thought:"):].strip() if thought.startswith("Thought:") else thought


def split_step(text: str):
    """(thought, action or None) by generation.py's three branches."""
    stripped = text.strip()
    if "\nAction: " in stripped:
        thought, action = stripped.split("\nAction: ")[:2]
        return thought, action
    if "Action: " in stripped:
        return "", text[len("Action: "):]
    return text.split("\n")[0], None


def split_action(action: str):
    """(action_type, action_args), or None for an action without ``[`` (the iteration is skipped)."""
    parts = action.split("[")
    if len(parts) < 2:
        return None
    return parts[0], parts[1][:-1]


@register_protocol("fireact")
class FireActProtocol(Protocol):
    name = "fireact"
    max_steps = 11
    max_tokens = 1000

    def check(self, method, fmt):
        if method.name != "react" or fmt == "chat" or method.style.numbered:
            raise ProtocolError("--protocol fireact is FireAct's generation.py loop: --method react with an "
                                "unnumbered (Google) text prompt or --alpaca_format; use --protocol lenient or react")

    def episode(self, loop, s):
        from methods.agent import Act, Ask

        m, budget = loop.method, loop.max_tokens
        skipped = 0
        for _ in range(m.max_steps):
            prompt = m.prompt(s)
            bare = prompt[:-len(m.cue(s))]  # generation.py's prompts[i], without "Thought:"
            g = yield Ask(prompt, ["\nObservation:"], budget)
            if g.error:
                return
            text, regenerated = strip_thought_label(g.text), False
            for attempt in range(REGENERATIONS):
                if "Action: " in text:
                    break
                g = yield Ask(bare, [], budget)
                if g.error:
                    return
                text, regenerated = strip_thought_label(g.text), True
                if attempt == REGENERATIONS - 1 and "Action: " not in text:
                    text = FAILED
            thought, action = split_step(text)
            repaired = regenerated
            if action is None:
                fix = yield Ask(f"{bare}Thought: {prune_thought(thought)}\nAction:", ["\nObservation:"], budget)
                if fix.error:
                    return
                action, repaired = strip_thought_label(fix.text).strip(), True
            call = split_action(action)
            if call is None:
                skipped += 1
                continue
            action_type, args = call
            step = Step(thought=prune_thought(thought), action=action, action_type=action_type.strip().lower(),
                        argument=args, raw=text, repaired=repaired)
            if "finish" in action_type.lower():
                step.action_type = "finish"
                loop.finish(s, step)
            elif action_type == "search" and loop.tool is not None and "search" in loop.tool.verbs:
                obs = yield Act("search", args)
                record_tool_call(loop, s, step, obs)
                step.observation = (none_if_empty(self, obs) if obs.text is not None else
                                    f"{(action_type, args)!r} generated an exception: {obs.error}")
            else:
                step.observation = f"{(action_type, args)!r} generated an exception: Unknown tool name: {action_type}"
            s.steps.append(step)
            loop.steps_taken += 1
            if s.done:
                return
        s.error = (f"no answer within --max_steps {m.max_steps} iterations" +
                   (f" ({skipped} spent on an action without '[')" if skipped else ""))
        s.done = True
