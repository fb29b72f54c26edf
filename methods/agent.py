"""The batched agent loop: every live episode takes one step per model call.

Each round: (Reflexion) batched self-reflections, one batched generation for all live episodes,
FireAct's repair prompt for texts without a parsable action, every tool call of the round run
concurrently, then observations appended. An episode that finishes is handed to ``on_done`` at
once (the runner appends it to disk) and its slot is refilled from the queue, so at most
``batch_size`` episodes hold backend state (KV caches) at a time. An episode whose prompt outgrows
the model's context ends alone (error "context full", unfinished); the others go on.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from fireharness.records import Step
from models.base import GenerationRequest

from .base import AgentState, Method
from .parsing import ParsedStep, one_line, parse_step


def _generate(backend, states: list, prompts: list, *, stop, max_tokens: int, temperature: float) -> list:
    t0 = time.perf_counter()
    gens = backend.generate([GenerationRequest(s.key, p) for s, p in zip(states, prompts)],
                            stop=stop, max_tokens=max_tokens, temperature=temperature)
    share = (time.perf_counter() - t0) / max(1, len(states))
    for s, g in zip(states, gens):
        s.timings["model_s"] += share
        if g.error:  # this prompt did not fit the context: the episode ends here, unfinished
            s.error, s.done = g.error, True
            continue
        s.tokens["prompt"] += g.prompt_tokens
        s.tokens["generated"] += g.generated_tokens
        s.tokens["computed"] += g.computed_prompt_tokens
        # The episode's longest context: the tokens it would compute once with perfect prefix reuse.
        s.tokens["context"] = max(s.tokens.get("context", 0), g.prompt_tokens + g.generated_tokens)
    return gens


def _valid_actions(method: Method, tool) -> str:
    verbs = list(tool.verbs) if (tool is not None and method.uses_tools) else []
    return ", ".join(f"{method.verb(v)}[...]" for v in verbs + ["finish"])


class AgentLoop:
    def __init__(self, *, method: Method, backend, tool=None, task=None, evaluate: bool = True,
                 max_tokens: int = 256, temperature: float = 0.0, batch_size: int = 64, tool_workers: int = 16):
        self.method, self.backend, self.tool, self.task = method, backend, tool, task
        self.evaluate, self.max_tokens, self.temperature = evaluate, max_tokens, temperature
        self.batch_size, self.tool_workers = batch_size, tool_workers
        self.steps_taken = 0

    def run(self, states: Iterable[AgentState], on_done: Callable[[AgentState], None]) -> None:
        queue, live = deque(states), []
        with ThreadPoolExecutor(max_workers=self.tool_workers, thread_name_prefix="tool") as pool:
            while queue or live:
                while queue and len(live) < self.batch_size:
                    state = queue.popleft()
                    if self.tool is not None and self.method.uses_tools:
                        state.session = self.tool.session()
                    live.append(state)
                self.round(live, pool)
                for state in [s for s in live if s.done]:
                    self.backend.release(state.key)
                    on_done(state)
                live = [s for s in live if not s.done]

    # --- one step of every live episode -------------------------------------------------------
    def round(self, live: list, pool: ThreadPoolExecutor) -> None:
        m = self.method
        reflecting = [s for s in live if m.needs_reflection(s)]
        if reflecting:
            gens = _generate(self.backend, reflecting, [m.reflection_prompt(s) for s in reflecting],
                             stop=m.reflection_stop(), max_tokens=self.max_tokens, temperature=self.temperature)
            for s, g in zip(reflecting, gens):
                if not g.error:
                    s.reflection = m.reflection_text(s, g.text)
            live = [s for s in live if not s.done]

        gens = _generate(self.backend, live, [m.prompt(s) for s in live], stop=m.stop(),
                         max_tokens=self.max_tokens, temperature=self.temperature)
        ran = [(s, g.text) for s, g in zip(live, gens) if not g.error]
        live, raws = [s for s, _ in ran], [text for _, text in ran]
        parsed = [m.parse(text, s) for text, s in zip(raws, live)]
        repaired = self.repair(live, parsed)

        futures = {}
        for i, (s, p) in enumerate(zip(live, parsed)):
            if p.verb and p.verb != "finish" and self.is_tool_verb(p.verb):
                futures[i] = pool.submit(s.session.act, p.verb, p.argument)

        for i, (s, p, raw) in enumerate(zip(live, parsed, raws)):
            step = Step(thought=p.thought, action=p.action, action_type=p.verb or "", argument=p.argument,
                        raw=raw, repaired=i in repaired, reflection=s.reflection)
            s.reflection = None
            if p.verb is None:
                s.error = s.error or "no parsable action after the repair prompt"  # or: the repair's context was full
                s.done = True
                step.action = one_line(raw)[:200]
                step.observation = "Invalid action: no action found"
                s.steps.append(step)
                continue
            if p.verb == "finish":
                self.finish(s, step)
            elif i in futures:
                obs = futures[i].result()
                step.tool, step.source, step.tool_error, step.latency_s = (
                    self.tool.name, obs.source, obs.error, obs.latency_s)
                step.observation = one_line(obs.text) if obs.text is not None else None
                s.timings["tool_s"] += obs.latency_s
            else:
                step.observation = f"Invalid action: {p.action}. Valid actions are {_valid_actions(m, self.tool)}."
            s.steps.append(step)
            self.steps_taken += 1
            if not s.done and len(s.steps) >= m.max_steps:
                s.error = f"no answer within --max_steps {m.max_steps}"
                s.done = True

    def is_tool_verb(self, verb: str) -> bool:
        return self.tool is not None and self.method.uses_tools and verb in self.tool.verbs

    def repair(self, live: list, parsed: list) -> set:
        """FireAct's repair: for a text with no action, show its thought and ask for the action."""
        bad = [i for i, p in enumerate(parsed) if p.verb is None]
        prompts = {i: self.method.repair_prompt(live[i], parsed[i]) for i in bad}
        bad = [i for i in bad if prompts[i] is not None]
        if not bad:
            return set()
        gens = _generate(self.backend, [live[i] for i in bad], [prompts[i] for i in bad], stop=["\n"],
                         max_tokens=min(self.max_tokens, 96), temperature=self.temperature)
        fixed = set()
        for i, g in zip(bad, gens):
            action = parse_step("Action: " + g.text.strip())
            if action.verb:
                parsed[i] = ParsedStep(thought=parsed[i].thought, verb=action.verb, argument=action.argument,
                                       action=action.action)
                fixed.add(i)
        return fixed

    def finish(self, state: AgentState, step: Step) -> None:
        state.prediction = step.argument
        state.finished = state.done = True
        if self.evaluate and self.task is not None:
            reward, state.score = self.task.evaluate(state.index, step.argument)
        else:
            reward = True  # FireAct without --evaluate: every episode "finished, reward = True"
        state.reward = reward
        step.observation = self.task.finish_observation(reward) if self.task is not None else \
            f"Episode finished, reward = {reward}"
