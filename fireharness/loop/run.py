"""The loop's stages, their identity (a key per stage) and the manifest that makes a rerun resume.

A stage's key hashes what it is (its kind and parameters), the keys of the stages it reads and the
contents of the files it reads from outside the experiment. So a finished stage whose key is unchanged
is skipped; a changed field changes the keys of its stage and of everything downstream, and those
re-run (their outputs removed first) while the rest stays done. Keys do not hash outputs: a sampled
trajectory re-drawn after a kill is the same episode by its seed, and the manifest the same.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from .config import LoopConfig, QuestionSet, has_round0_data, validate


class LoopError(RuntimeError):
    """A stage cannot go on: one line that says why."""


def log(message: str) -> None:
    print(f"loop: {message}", file=sys.stderr, flush=True)


def input_path(spec: str) -> Path:
    """A file named in the config (a teacher file may carry :N or :RATIO)."""
    from finetune.convert import InputSpec

    return InputSpec.parse(spec).path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# RunConfig fields added after an experiment was committed: left out of a stage's key while at their default, so
# that its finished stages stay finished (tests/test_loop.py::test_the_committed_experiment_keeps_its_keys).
LATER_FIELDS = {"compile": None}


@dataclass
class Stage:
    name: str
    kind: str  # generate, filter, sft, given_adapter, dpo, leaderboard
    params: dict
    deps: list = field(default_factory=list)  # names of the stages it reads
    inputs: list = field(default_factory=list)  # files from outside the experiment it reads
    outputs: list = field(default_factory=list)  # what it writes (removed when its key changed)
    run: Optional[Callable] = None  # () -> seconds of the stage's own work
    key: str = ""


class Manifest:
    """``manifest.json``: the config, and per stage its key, status, parameters and timings. Written
    whole after every change (a temp file renamed over it: a kill never leaves half a manifest)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"stages": {}}
        self.lock = threading.RLock()  # the loop and its heartbeat both change and write it

    @property
    def stages(self) -> dict:
        return self.data["stages"]

    def save(self) -> None:
        with self.lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            tmp.replace(self.path)


def kill_with_parent() -> None:
    """In a child: die with the loop (a SIGKILLed loop must not leave a trainer writing its adapter)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def merged_dir(adapter: Path) -> Path:
    return adapter.with_name(adapter.name + "_merged")


def last_complete_checkpoint(out: Path) -> Optional[str]:
    """The newest ``checkpoint-N`` the trainer finished writing (its trainer_state.json is written last); one
    a kill cut short is removed."""
    import re

    for ckpt in sorted(out.glob("checkpoint-*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0), reverse=True):
        if (ckpt / "trainer_state.json").is_file():
            return str(ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


def trainer_flags(args: dict) -> list:
    """A training stage's arguments as its trainer's command line (None: the trainer's default)."""
    return [item for key, value in args.items() if value is not None for item in (f"--{key}", str(value))]


class Loop:
    def __init__(self, config: LoopConfig, backend=None):
        self.c = c = config
        self.sets = validate(c)  # before anything is written
        self.dir = Path(c.output_dir).resolve()
        self._engine = backend  # a caller's engine (tests), else started at the first generation stage
        self._owns_engine = backend is None
        self._engine_model = (self.c.base_model, self.c.speculative) if backend is not None else None
        self.engine_start_s = 0.0
        self.paused_s = 0.0  # time this process was stopped (kill -STOP), seen by the heartbeat
        self.stages = self.plan()
        # The running stage's clock, for the heartbeat: (name, started, engine starts and pauses until then, its
        # seconds and work seconds before this invocation).
        self._running: Optional[tuple] = None
        self.heartbeat_s = 30.0

    # --- the plan --------------------------------------------------------------------------------
    def adapter_dir(self, r: int, kind: str) -> Path:
        return self.dir / "adapters" / f"r{r}_{kind}"

    def run_config(self, name: str, qs: QuestionSet, **kw):
        from generation import RunConfig

        c = self.c
        fields = dict(task=qs.task, task_split=qs.split, task_start_index=qs.start, task_end_index=qs.end,
                      evaluate=True, backend=c.backend, modelpath=c.base_model, method=c.method, tool=c.tool,
                      search_fallback=c.search_fallback, max_steps=c.max_steps, max_tokens=c.max_tokens,
                      batch_size=c.batch_size, seed=c.seed, speculative=c.speculative,
                      max_model_len=c.max_model_len, protocol=c.protocol, run_name=name, output_dir=str(self.dir))
        return RunConfig(**{**fields, **kw})

    def generate_stage(self, name: str, runs: list, deps: list, inputs: list = ()) -> Stage:
        outputs = [self.dir / d / f"{r.run_name}.{ext}" for r in runs for d, ext in (("trajs", "jsonl"), ("results", "json"))]
        params = {"runs": [{k: v for k, v in asdict(r).items()
                            if k != "output_dir" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])} for r in runs]}
        for p in params["runs"]:  # adapters inside the experiment are named relative to it (a moved dir still resumes)
            p["peftpath"] = os.path.relpath(p["peftpath"], self.dir) if p["peftpath"] else ""
        stage = Stage(name, "generate", params, deps, list(inputs), outputs)
        stage.run = lambda: self.generate(runs)
        return stage

    def model_runs(self, prefix: str, sets: list, adapter: Path, **kw) -> list:
        """The fine-tuned model in FireAct's format (Alpaca wrapper, no few-shot) through per-request LoRA."""
        return [self.run_config(f"{prefix}_{qs.name}", qs, alpaca_format=True, add_lora=True, peftpath=str(adapter),
                                **kw) for qs in sets]

    def plan(self) -> list:
        c = self.c
        stages = []
        for method in c.methods:
            runs = [self.run_config(f"baseline_{method}_{qs.name}", qs, method=method) for qs in self.sets["eval"]]
            stages.append(self.generate_stage(f"baseline_{method}", runs, []))
        evals = []
        for r in range(c.rounds + 1):
            data_deps, data_inputs = [], []
            if r == 0:
                data_inputs = [str(s) for s in c.teacher_files]
                if c.teacher_backend:
                    stages.append(self.teacher_stage())
                    data_deps.append("r0_teacher")
            else:
                previous = self.final_kind(r - 1)
                final = self.adapter_dir(r - 1, previous)
                k = c.num_samples
                runs = self.model_runs(f"r{r}_sample", self.sets["train"], final, num_samples=k,
                                       temperature=c.temperature if k > 1 else 0.0,
                                       speculative=c.sample_speculative if k > 1 else c.speculative)
                stages.append(self.generate_stage(f"r{r}_sample", runs, [f"r{r - 1}_{previous}"]))
                data_deps.append(f"r{r}_sample")
                if c.mix_round0:
                    data_deps.append("r0_filter")
            given = r == 0 and c.round0_adapter  # round 0's model given, not trained: its data only feeds later rounds
            if not given or has_round0_data(c):
                stages.append(self.filter_stage(r, data_deps, data_inputs))
            stages.append(self.given_adapter_stage() if given else self.sft_stage(r))
            stages.append(self.generate_stage(f"r{r}_sft_eval", self.model_runs(f"r{r}_sft_eval", self.sets["eval"],
                                                                                 self.adapter_dir(r, "sft")),
                                              [f"r{r}_sft"]))
            evals.append(f"r{r}_sft_eval")
            if self.final_kind(r) == "dpo":
                stages.append(self.dpo_stage(r))
                stages.append(self.generate_stage(
                    f"r{r}_dpo_eval", self.model_runs(f"r{r}_dpo_eval", self.sets["eval"], self.adapter_dir(r, "dpo")),
                    [f"r{r}_dpo"]))
                evals.append(f"r{r}_dpo_eval")
        baselines = [f"baseline_{m}" for m in c.methods]
        board = Stage("leaderboard", "leaderboard", {"evals": evals, "baselines": baselines}, baselines + evals, [],
                      [self.dir / f"leaderboard.{ext}" for ext in ("md", "csv", "png")])
        board.run = lambda: self.leaderboard(evals, baselines)
        stages.append(board)
        keys = {}
        for s in stages:
            digest = hashlib.sha256(json.dumps({"kind": s.kind, "params": s.params, "deps": [keys[d] for d in s.deps],
                                                "inputs": {p: file_digest(input_path(p)) for p in s.inputs}},
                                               sort_keys=True, default=str).encode())
            s.key = keys[s.name] = digest.hexdigest()[:16]
        return stages

    def final_kind(self, r: int) -> str:
        """Which of round r's stages trains its final model: dpo where the round has a DPO stage, else sft."""
        c = self.c
        return "dpo" if c.dpo and (r or (c.dpo_round0 and has_round0_data(c))) else "sft"

    def teacher_stage(self) -> Stage:
        c = self.c
        local = c.teacher_backend in ("vllm", "hf", "llama")
        k = c.num_samples
        kw = dict(backend=c.teacher_backend, method=c.teacher_method or c.method, num_samples=k,
                  temperature=c.temperature if k > 1 else 0.0, chatgpt_format=c.teacher_format == "chat",
                  speculative=c.sample_speculative if k > 1 else c.speculative,
                  alpaca_format=c.teacher_format == "alpaca", base_url=c.teacher_base_url,
                  add_lora=bool(c.teacher_adapter), peftpath=c.teacher_adapter)
        if local:
            kw["modelpath"] = c.teacher_model or c.base_model
        else:
            kw["model_name"] = c.teacher_model or None
        runs = [self.run_config(f"r0_teacher_{qs.name}", qs, **kw) for qs in self.sets["train"]]
        adapter = [str(p) for p in Path(c.teacher_adapter).glob("adapter_*")] if c.teacher_adapter else []
        return self.generate_stage("r0_teacher", runs, [], sorted(adapter))

    def filter_stage(self, r: int, deps: list, inputs: list) -> Stage:
        c = self.c
        params = {"keep_failed": c.keep_failed or (r == 0 and c.round0_keep_failed), "min_f1": c.min_f1, "max_steps": c.filter_max_steps,
                  "drop_tool_errors": c.drop_tool_errors, "dedup": c.dedup, "dpo": c.dpo, "seed": c.seed,
                  "files": inputs}
        sft, dpo = self.dir / "data" / f"r{r}_sft.json", self.dir / "data" / f"r{r}_dpo.jsonl"
        stage = Stage(f"r{r}_filter", "filter", params, deps, list(inputs), [sft, dpo])
        stage.run = lambda: self.filter(r, deps, inputs, sft, dpo)
        return stage

    def given_adapter_stage(self) -> Stage:
        """Round 0's model as given (``round0_adapter``): copied in as ``r0_sft``, so that every later stage reads
        it where it would read a trained one. Its files' contents are the stage's inputs."""
        source = Path(self.c.round0_adapter)
        files = sorted(str(p) for p in source.iterdir() if p.is_file())
        out = self.adapter_dir(0, "sft")
        stage = Stage("r0_sft", "given_adapter", {"adapter": self.c.round0_adapter}, [], files, [out, merged_dir(out)])

        def copy():
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint-*"))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            return 0.0

        stage.run = copy
        return stage

    def sft_stage(self, r: int) -> Stage:
        c = self.c
        out = self.adapter_dir(r, "sft")
        args = {"base_model": c.base_model, "data_path": str(self.dir / "data" / f"r{r}_sft.json"),
                "output_dir": str(out), "num_epochs": c.sft_epochs, "max_steps": c.sft_max_steps,
                "learning_rate": c.learning_rate, "lora_r": c.lora_r, "lora_alpha": c.lora_alpha,
                "lora_target_modules": c.lora_target_modules, "batch_size": c.train_batch_size,
                "micro_batch_size": c.micro_batch_size, "cutoff_len": c.cutoff_len, "save_strategy": "steps",
                "save_steps": c.save_steps, "seed": c.seed, "load_in_4bit": c.sft == "qlora"}
        deps = [f"r{r}_filter"]
        # A round whose filter kept nothing trains nothing: the last round's model stands.
        kind = self.final_kind(r - 1) if r else None
        previous = self.adapter_dir(r - 1, kind) if r else None
        if r and c.sft_init == "previous":
            # Trained further, not afresh: round r's few new successes would be a small share of a mix with round
            # 0's data, and the round would come out as a re-run of round 0. (Left out of the key at its default.)
            args["peftpath"] = str(previous)
            deps.append(f"r{r - 1}_{kind}")
        stage = Stage(f"r{r}_sft", "sft", self._relative(args), deps, [], [out, merged_dir(out)])
        stage.run = lambda: self.train("finetune.sft", args, out, previous)
        return stage

    def dpo_stage(self, r: int) -> Stage:
        c = self.c
        out = self.adapter_dir(r, "dpo")
        args = {"base_model": c.base_model, "peftpath": str(self.adapter_dir(r, "sft")),
                "data_path": str(self.dir / "data" / f"r{r}_dpo.jsonl"), "output_dir": str(out),
                "num_epochs": c.dpo_epochs, "max_steps": c.dpo_max_steps, "learning_rate": c.dpo_learning_rate,
                "beta": c.dpo_beta, "lora_r": c.lora_r, "lora_alpha": c.lora_alpha, "cutoff_len": c.cutoff_len,
                "micro_batch_size": min(2, c.micro_batch_size), "batch_size": c.train_batch_size,
                "save_steps": c.save_steps, "seed": c.seed}
        stage = Stage(f"r{r}_dpo", "dpo", self._relative(args), [f"r{r}_sft", f"r{r}_filter"], [], [out, merged_dir(out)])
        stage.run = lambda: self.train("finetune.dpo", args, out, Path(args["peftpath"]))
        return stage

    def _relative(self, args: dict) -> dict:
        return {k: os.path.relpath(v, self.dir) if isinstance(v, str) and v.startswith(str(self.dir)) else v
                for k, v in args.items()}

    # --- running ---------------------------------------------------------------------------------
    def execute(self) -> dict:
        t0 = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(self.dir / "manifest.json")
        manifest.data["config"] = asdict(self.c)
        wanted = {s.name for s in self.stages}
        for name in [n for n in manifest.stages if n not in wanted]:
            log(f"{name}: no longer in the config; its outputs stay, its record is dropped")
            del manifest.stages[name]
        work = {}
        # Every invocation is kept (a long experiment is killed and resumed, maybe on another machine): its CPU,
        # start, wall time and the stages it worked on, brought up to date after each stage and, by a heartbeat,
        # during one: a stage killed after hours keeps its hours, in its own seconds and in the invocation's.
        from models.cpu import cpu_info

        invocation = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_info(), "cpus": os.cpu_count(),
                      "wall_s": 0.0, "paused_s": 0.0, "stage_work_s": work}
        manifest.data.setdefault("invocations", []).append(invocation)
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(manifest, invocation, t0, stop), daemon=True)
        heartbeat.start()
        try:
            for stage in self.stages:
                self.run_stage(stage, manifest, invocation, t0)
        finally:
            stop.set()
            heartbeat.join()
            if self._owns_engine and self._engine is not None:
                self._engine.close()
                self._engine = None
        wall = time.perf_counter() - t0
        with manifest.lock:
            invocation.update(wall_s=wall, paused_s=self.paused_s)
            manifest.data["last_invocation"] = {
                "wall_s": wall, "paused_s": self.paused_s, "engine_start_s": self.engine_start_s, "stage_work_s": work,
                "overhead": (wall - self.paused_s) / sum(work.values()) if work else None}
            manifest.save()
        return manifest.data

    def _not_working_s(self) -> float:
        return self.engine_start_s + self.paused_s

    def _stage_seconds(self, started: float, not_working_before: float) -> float:
        """A stage's seconds since ``started``, less the engine starts (counted apart, engine_start_s) and the
        pauses they held."""
        return time.perf_counter() - started - (self._not_working_s() - not_working_before)

    def _heartbeat(self, manifest: Manifest, invocation: dict, t0: float, stop: threading.Event) -> None:
        last = time.perf_counter()
        while not stop.wait(self.heartbeat_s):
            now = time.perf_counter()
            # A beat far later than due: the process was stopped (`kill -STOP`, to lend a shared machine's cores to
            # another job); the monotonic clock ran on, and that time is no stage's work.
            late = now - last - self.heartbeat_s
            last = now
            with manifest.lock:
                if late > max(self.heartbeat_s, 1.0):
                    self.paused_s += late
                invocation.update(wall_s=now - t0, paused_s=self.paused_s)
                if self._running:
                    name, started, not_working_before, seconds, work_seconds = self._running
                    elapsed = self._stage_seconds(started, not_working_before)
                    manifest.stages[name].update(seconds=seconds + elapsed, work_seconds=work_seconds + elapsed)
                    invocation["stage_work_s"][name] = elapsed
                manifest.save()

    def run_stage(self, stage: Stage, manifest: Manifest, invocation: dict, t_invocation: float) -> None:
        record = manifest.stages.get(stage.name)
        if record and record["key"] == stage.key and record["status"] == "done":
            log(f"{stage.name}: done, inputs unchanged: skipped")
            return
        if record and record["key"] != stage.key:
            changed = sorted(k for k in set(record.get("params", {})) | set(stage.params)
                             if record.get("params", {}).get(k) != stage.params.get(k))
            upstream = [d for d in stage.deps if manifest.stages.get(d, {}).get("changed")]
            why = (f"{', '.join(changed)} changed" if changed else
                   f"{', '.join(upstream)} changed" if upstream else "its inputs changed")
            log(f"{stage.name}: {why}: re-running it")
            for path in stage.outputs:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            record = None
        elif record:
            log(f"{stage.name}: resuming")
        else:
            log(f"{stage.name}: starting")
        seconds, work_seconds = (record or {}).get("seconds", 0.0), (record or {}).get("work_seconds", 0.0)
        t0 = time.perf_counter()
        not_working_before = self._not_working_s()
        with manifest.lock:
            manifest.stages[stage.name] = {"key": stage.key, "status": "running", "kind": stage.kind, "deps": stage.deps,
                                           "params": stage.params, "changed": record is None, "seconds": seconds,
                                           "work_seconds": work_seconds}
            self._running = (stage.name, t0, not_working_before, seconds, work_seconds)
            manifest.save()
        try:
            work = stage.run()
        finally:
            with manifest.lock:
                self._running = None
        elapsed = self._stage_seconds(t0, not_working_before)
        with manifest.lock:
            manifest.stages[stage.name].update(
                status="done", seconds=seconds + elapsed, work_seconds=work_seconds + (elapsed if work is None else work),
                outputs=[os.path.relpath(p, self.dir) for p in stage.outputs if p.exists()])
            invocation["stage_work_s"][stage.name] = elapsed if work is None else work
            invocation["wall_s"] = time.perf_counter() - t_invocation
            manifest.save()
        log(f"{stage.name}: done in {elapsed:.1f} s")

    def engine(self, modelpath: str, speculative: str):
        """The engine of ``modelpath``, shared by every stage that runs that model with the same drafting
        (``serve: lora``: one engine for all, each run's adapter per request); a stage of another model, or
        sampling after greedy stages, closes it and starts its own."""
        c = self.c
        if self._engine is not None and self._engine_model != (modelpath, speculative):
            if not self._owns_engine:
                raise LoopError(f"the engine given to the loop serves {self._engine_model}, not "
                                f"{(modelpath, speculative)}; use serve: lora with a caller's engine")
            self._engine.close()
            self._engine = None
        if self._engine is None:
            from models import BackendConfig, get_backend

            t0 = time.perf_counter()
            rank = c.lora_r if c.serve == "lora" else 0
            if c.teacher_adapter and c.teacher_backend == "vllm":
                from models.adapters import adapter_rank, prepare_adapter
                from models.resolve import resolve_model_path
                rank = max(rank, adapter_rank(prepare_adapter(c.teacher_adapter, resolve_model_path(c.base_model))))
            log(f"starting the {c.backend} engine ({modelpath}, speculative {speculative}"
                + (f", LoRA up to rank {rank})" if rank else ")"))
            self._engine_model = (modelpath, speculative)
            self._engine = get_backend(c.backend, BackendConfig(
                modelpath=modelpath, max_model_len=c.max_model_len, batch_size=c.batch_size, seed=c.seed,
                speculative=speculative, max_lora_rank=rank))
            self.engine_start_s += time.perf_counter() - t0
        return self._engine

    def generate(self, runs: list) -> None:
        from generation import Run, RunError

        for config in runs:
            own_model = config.backend == "vllm" == self.c.backend and config.modelpath == self.c.base_model
            if own_model and config.add_lora and self.c.serve == "merged":
                config = replace(config, modelpath=self.merged(Path(config.peftpath)), add_lora=False, peftpath="")
            try:
                run = Run(config)
            except RunError as e:
                raise LoopError(f"{config.run_name}: {e}") from None
            todo = len(run.indices) * config.num_samples - len(run.done)
            run.execute(backend=self.engine(config.modelpath, config.speculative) if own_model and todo else None)

    def merged(self, adapter: Path) -> str:
        """The adapter merged into the base weights, once (written aside, then renamed: a kill leaves none
        half-written). vLLM's LoRA kernels on CPU run the whole model slower, base requests too."""
        out = merged_dir(adapter)
        if not (out / "config.json").is_file():
            from finetune.merge import merge

            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            merge(self.c.base_model, str(adapter), str(tmp))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        return str(out)

    def filter(self, r: int, deps: list, files: list, sft: Path, dpo: Path) -> None:
        from finetune.convert import Filters, run_conversion, write_rows
        from finetune.readers import InputError

        c = self.c
        inputs = list(files)
        for dep in deps:
            if dep == "r0_filter":  # round 0's data mixed in: its rows, as they were kept
                inputs.append(str(self.dir / "data" / "r0_sft.json"))
            else:
                stage = next(s for s in self.stages if s.name == dep)
                inputs += [str(p) for p in stage.outputs if p.suffix == ".jsonl"]
        filters = Filters(keep_failed=c.keep_failed or (r == 0 and c.round0_keep_failed), min_f1=c.min_f1, max_steps=c.filter_max_steps,
                          drop_tool_errors=c.drop_tool_errors)
        try:
            conversion = run_conversion(inputs, "alpaca", filters=filters, dedup=c.dedup, seed=c.seed)
            report = conversion.table()
            if not conversion.rows and r == 0:
                raise LoopError("r0_filter: no episode passed the filter (see the table above); keep more "
                                "(round0_keep_failed, min_f1) or give other teacher_files")
            if not conversion.rows:
                log(f"r{r}_filter: no episode passed the filter: round {r - 1}'s model stands for round {r}")
            write_rows(conversion.rows, sft, "alpaca")
            if c.dpo:
                pairs = run_conversion(inputs, "dpo", filters=Filters(min_f1=c.min_f1, max_steps=c.filter_max_steps,
                                                                      drop_tool_errors=c.drop_tool_errors),
                                       dedup="none", seed=c.seed)
                write_rows(pairs.rows, dpo, "dpo")
                report += f"\n{len(pairs.rows)} DPO pairs"
        except InputError as e:
            raise LoopError(f"r{r}_filter: {e}") from None
        finally:
            if "report" in locals():
                print(report, file=sys.stderr)
        (sft.parent / f"r{r}_filter.txt").write_text(report + "\n")

    def train(self, module: str, args: dict, out: Path, fallback: Optional[Path]) -> Optional[float]:
        """The trainer in its own process (memory back to the engine after), resumed from its last
        checkpoint when a killed loop left one. Returns the trainer's own seconds of training. With no
        training data, ``fallback`` (the model before this stage) is copied as this stage's model."""
        if Path(args["data_path"]).read_text().strip() in ("", "[]"):
            log(f"{out.name}: no training data (see the filter's table): {fallback.name} stands as {out.name}")
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(fallback, out, ignore=shutil.ignore_patterns("checkpoint-*"))
            return 0.0
        argv = [sys.executable, "-m", module, *trainer_flags(args)]
        last = last_complete_checkpoint(out)
        if last:
            log(f"{out.name}: resuming training from {Path(last).name}")
            argv += ["--resume_from_checkpoint", last]
        proc = subprocess.run(argv, preexec_fn=kill_with_parent, cwd=str(Path(__file__).resolve().parents[2]))
        if proc.returncode != 0:
            raise LoopError(f"{module} exited with {proc.returncode} training {out}")
        for ckpt in out.glob("checkpoint-*"):  # the adapter is saved; checkpoints were for a kill mid-training
            shutil.rmtree(ckpt, ignore_errors=True)
        summary = out / "fireharness_train.json"
        return json.loads(summary.read_text()).get("train_seconds") if summary.exists() else None

    def leaderboard(self, evals: list, baselines: list) -> None:
        """The view above this layer, through its command line: the table (csv, plot) and paired comparisons
        of each round with the one before and with every prompted baseline, on each eval set."""
        results = self.dir / "results"

        def board(*args) -> str:
            proc = subprocess.run([sys.executable, "leaderboard.py", *map(str, args)], capture_output=True, text=True,
                                  cwd=str(Path(__file__).resolve().parents[2]))
            if proc.returncode != 0:
                raise LoopError(f"leaderboard.py {' '.join(map(str, args))}: {proc.stderr.strip().splitlines()[-1:]}")
            return proc.stdout

        files = [results / f"{n}_{qs.name}.json" for n in baselines + evals for qs in self.sets["eval"]]
        table = board(*files, "--csv", self.dir / "leaderboard.csv", "--plot", self.dir / "leaderboard.png")
        parts = ["# Leaderboard\n", table]
        pairs = [(evals[i - 1], e) for i, e in enumerate(evals) if i] + [(b, e) for e in evals for b in baselines]
        for a, b in pairs:
            for qs in self.sets["eval"]:
                parts += [f"\n## {b} vs {a} ({qs.name})\n",
                          board("--compare", results / f"{a}_{qs.name}.json", results / f"{b}_{qs.name}.json")]
        (self.dir / "leaderboard.md").write_text("".join(parts))
        print(table, file=sys.stderr)
