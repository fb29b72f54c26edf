"""The agent loop: each episode reads top to bottom as one generator; a scheduler runs them all.

An episode (``AgentLoop.episode``) yields what it waits for, an ``Ask`` (a generation) or an
``Act`` (a tool call), and is resumed with the answer: (Reflexion) a self-reflection, the step's
Thought/Action, FireAct's repair prompt for a text without a parsable action, the tool's
observation, until ``finish[...]``, ``--max_steps`` or a full context.

The scheduler (``AgentLoop.run``) keeps at most ``batch_size`` episodes live, hands each one that
ends to ``on_done`` at once (the runner appends it to disk) and starts the next from the queue.
Generations go to the backend with ``submit``; tool calls to a thread pool, so they overlap.
With a continuous backend (vllm), an episode's next request joins the running batch as soon as
its last one is done: nobody waits for the slowest generation of a round, and a repair prompt
runs beside the other episodes' next steps. Other backends (hf) get everything asked together
as batches, after every pending tool call has answered.

Measured (agent_throughput: 64 HotpotQA questions, ReAct, embedded model, vllm on 2 cores): in rounds
the engine took 1,154 steps, 454 of them for one sequence, and the repair prompts after each round
(3-13 of them) took 19 s of the 67. Continuous alone took as many steps: one episode's ~600 tokens
are generated one after another either way. What it does is let n-gram speculation, which shortens
exactly that path, pay off: 134 engine steps, loop 67-71 s -> 45-46 s (rounds with speculation:
60-61 -> 50-54 s, each pair measured side by side).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from fireharness.records import Step
from models.base import Generation, GenerationRequest, Prompt

from .base import AgentState, Method
from .parsing import ParsedStep, one_line, parse_step


@dataclass
class Ask:
    """A generation the episode waits for."""
    prompt: Prompt
    stop: list
    max_tokens: int


@dataclass
class Act:
    """A tool call the episode waits for."""
    verb: str
    argument: str


def _valid_actions(method: Method, tool) -> str:
    verbs = list(tool.verbs) if (tool is not None and method.uses_tools) else []
    return ", ".join(f"{method.verb(v)}[...]" for v in verbs + ["finish"])


def _record(state: AgentState, g: Generation) -> None:
    state.timings["model_s"] += g.model_s
    if g.error:  # this prompt did not fit the context: the episode ends here, unfinished
        state.error, state.done = g.error, True
        return
    state.tokens["prompt"] += g.prompt_tokens
    state.tokens["generated"] += g.generated_tokens
    state.tokens["computed"] += g.computed_prompt_tokens
    # The episode's longest context: the tokens it would compute once with perfect prefix reuse.
    state.tokens["context"] = max(state.tokens.get("context", 0), g.prompt_tokens + g.generated_tokens)


class AgentLoop:
    def __init__(self, *, method: Method, backend, tool=None, task=None, evaluate: bool = True,
                 max_tokens: int = 256, temperature: float = 0.0, batch_size: int = 64, tool_workers: int = 16,
                 overlap_tools: bool = False, adapter: Optional[str] = None, protocol=None):
        self.method, self.backend, self.tool, self.task = method, backend, tool, task
        self.evaluate, self.max_tokens, self.temperature = evaluate, max_tokens, temperature
        self.batch_size, self.tool_workers = batch_size, tool_workers
        # False: every tool call is answered before the backend goes on (offline tools take milliseconds),
        # so the backend sees the same requests in the same order on every run, and a run reproduces.
        # True (live tools, ~1 s a call): a continuous backend keeps generating meanwhile.
        self.overlap_tools = overlap_tools
        self.adapter = adapter  # LoRA adapter dir every request asks for (a shared engine's), or None
        self.steps_taken = 0
        # methods/protocols: a seed's loop (react, fireact); None is this loop's own (lenient) episode below.
        self.protocol = protocol

    # --- the scheduler ------------------------------------------------------------------------
    def run(self, states: Iterable[AgentState], on_done: Callable[[AgentState], None],
            more: Optional[Callable[[bool], list]] = None) -> None:
        """``more``: a feed of further states (a Ray replica's), asked whenever fewer than ``batch_size``
        episodes are live or queued; ``more(True)`` when none are may block until there are. With a feed
        the loop runs until its process ends."""
        queue = deque(states)
        live: dict = {}   # key -> (state, its episode generator)
        tool_calls: dict = {}  # future -> key
        backend = self.backend
        overlap = self.overlap_tools and backend.continuous  # a batching backend waits for every tool call anyway

        def resume(key: str, answer) -> None:
            """Give an episode the answer it waited for; route what it asks next."""
            state, episode = live[key]
            if isinstance(answer, Generation):
                _record(state, answer)
            try:
                wanted = episode.send(answer)
            except StopIteration:
                del live[key]
                backend.release(key)
                on_done(state)
                return
            if isinstance(wanted, Ask):
                backend.submit(GenerationRequest(key, wanted.prompt, seed=state.seed, adapter=self.adapter), stop=wanted.stop, max_tokens=wanted.max_tokens,
                               temperature=self.temperature)
            else:
                tool_calls[pool.submit(state.session.act, wanted.verb, wanted.argument)] = key

        with ThreadPoolExecutor(max_workers=self.tool_workers, thread_name_prefix="tool") as pool:
            try:
                while queue or live or more:
                    if more and len(queue) + len(live) < self.batch_size:
                        queue.extend(more(not queue and not live))
                    while queue and len(live) < self.batch_size:
                        state = queue.popleft()
                        if self.tool is not None and self.method.uses_tools:
                            state.session = self.tool.session()
                        live[state.key] = (state, self.protocol.episode(self, state) if self.protocol
                                           else self.episode(state))
                        resume(state.key, None)
                    if not live:
                        continue
                    if not tool_calls and not backend.pending():
                        raise RuntimeError(f"{len(live)} episodes wait for nothing")  # a bug in an episode's yields
                    # Overlapping, wait for a tool only if there is nothing else to do; else for all of them.
                    if tool_calls and not (overlap and backend.pending()):
                        wait(tool_calls, return_when=FIRST_COMPLETED if overlap else ALL_COMPLETED)
                    for future in [f for f in tool_calls if f.done()]:  # in the order they were asked
                        resume(tool_calls.pop(future), future.result())
                    if backend.pending():
                        for request, generation in backend.collect():
                            resume(request.key, generation)
            finally:
                if backend.pending():
                    backend.cancel()

    # --- one episode --------------------------------------------------------------------------
    def episode(self, s: AgentState) -> Iterator:
        m = self.method
        for verb, argument in m.opening_actions(s):  # rag: retrieval for the question before any generation
            step = Step(action=f"{m.verb(verb)}[{argument}]", action_type=verb, argument=argument)
            self.observe(s, step, (yield Act(verb, argument)))
            s.steps.append(step)
        while not s.done:
            if m.needs_reflection(s):
                g = yield Ask(m.reflection_prompt(s), m.reflection_stop(), self.max_tokens)
                if g.error:
                    return
                s.reflection = m.reflection_text(s, g.text)
            g = yield Ask(m.prompt(s), m.stop(), self.max_tokens)
            if g.error:
                return
            yield from self.step(s, g.text)

    def step(self, s: AgentState, raw: str) -> Iterator:
        """Read one Thought/Action text (repairing it if needed), act, and append the step."""
        m = self.method
        parsed = m.parse(raw, s)
        repaired = False
        if parsed.verb is None:
            fixed = yield from self.repair(s, parsed)
            if fixed is not None:
                parsed, repaired = fixed, True
        step = Step(thought=parsed.thought, action=parsed.action, action_type=parsed.verb or "",
                    argument=parsed.argument, raw=raw, repaired=repaired, reflection=s.reflection)
        s.reflection = None
        if parsed.verb is None:
            s.error = s.error or "no parsable action after the repair prompt"  # or: the repair's context was full
            s.done = True
            step.action = one_line(raw)[:200]
            step.observation = "Invalid action: no action found"
            s.steps.append(step)
            return
        if parsed.verb == "finish":
            self.finish(s, step)
        elif self.is_tool_verb(parsed.verb):
            self.observe(s, step, (yield Act(parsed.verb, parsed.argument)))
        else:
            step.observation = f"Invalid action: {parsed.action}. Valid actions are {_valid_actions(m, self.tool)}."
        s.steps.append(step)
        self.steps_taken += 1
        if not s.done and len(s.steps) >= m.max_steps:
            s.error = f"no answer within --max_steps {m.max_steps}"
            s.done = True

    def observe(self, s: AgentState, step: Step, obs) -> None:
        """Put a tool's observation, and which tool and source gave it, into the step."""
        step.tool, step.source, step.tool_error, step.latency_s = self.tool.name, obs.source, obs.error, obs.latency_s
        step.observation = one_line(obs.text) if obs.text is not None else None
        s.timings["tool_s"] += obs.latency_s

    def is_tool_verb(self, verb: str) -> bool:
        return self.tool is not None and self.method.uses_tools and verb in self.tool.verbs

    def repair(self, s: AgentState, parsed: ParsedStep) -> Iterator:
        """FireAct's repair: for a text with no action, show its thought and ask for the action alone.
        Returns the repaired step, or None."""
        prompt = self.method.repair_prompt(s, parsed)
        if prompt is None:
            return None
        g = yield Ask(prompt, ["\n"], min(self.max_tokens, 96))
        action = parse_step("Action: " + g.text.strip())
        if not action.verb:
            return None
        return ParsedStep(thought=parsed.thought, verb=action.verb, argument=action.argument, action=action.action)

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
