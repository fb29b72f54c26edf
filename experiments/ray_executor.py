"""Agent episodes on a Ray cluster: ``generation.py ... --executor ray --replicas N``.

The pattern of verl's agent loop, OpenRLHF and vLLM's RLHF examples: each replica is a Ray actor that
owns one backend (a vLLM engine, an hf model or an OpenAI client, built by ``Run.build_backend``) and
runs episodes with the project's agent loop (``methods/agent.py``); a driver hands out the work.

- The driver is the only writer of ``trajs/<run>.jsonl`` (``Run.record``: appended and flushed as each
  episode arrives), so resuming is the in-process run's: a killed driver re-run skips what is on disk.
- Work goes out in small slices, round-robin, topping each replica up to its batch plus one slice, so
  every replica's batch stays full and a fast replica is not starved while a slow one hoards.
  A replica takes new episodes into its running batch as earlier ones end (``AgentLoop.run(more=...)``).
- A replica that dies (its process killed, its node lost) has its unfinished episodes sent to the
  others, in run order; an episode's seed derives from (run, index, sample), so a re-sent episode
  reproduces. The driver writes an (index, sample) once: a late copy is dropped.
- CPU replicas are built in two steps: each reports its node, then builds its backend pinned to its share
  of that node's cores (``pin_to_cores``), so that replicas on one node never share a core.
- Tensor-parallel vLLM replicas (``--tensor_parallel_size T`` with GPUs) get a placement group of T
  one-GPU bundles each, the actor placed in it with ``placement_group_capture_child_tasks``, as vLLM's
  RLHF examples do: vLLM then starts its T workers in that group (it picks its Ray executor inside a
  placement group, ``vllm/config/parallel.py``). That path is written for GPU users and untested here
  (no GPU); the CPU path is tested on a real local cluster (tests/test_ray_executor.py).

Results are the in-process run's for the same command and seeds, up to the backend's numerics across
batch shapes: a replica batches other episodes beside a given one than a single process would, and
vLLM/hf kernels give bit-different logits at different batch sizes (greedy text can then differ where
two tokens are nearly tied).
"""
from __future__ import annotations

import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Optional

from fireharness.records import episode_key
from generation import Run, RunConfig, RunError

TAKE_WAIT_S = 1.0  # how long a replica's take() waits for a finished episode before answering empty


class Replica:
    """One backend and an agent loop running in a thread; episodes in through ``give``, out through ``take``.
    Decorated with ``ray.remote`` at run time, so that importing this module does not need Ray."""

    def __init__(self, config: RunConfig, run_name: str, first_key: tuple):
        self.args = (config, run_name, first_key)  # built in start(), once the driver knows who shares the node

    def node(self) -> str:
        import ray
        return ray.get_runtime_context().get_node_id()

    def start(self, rank_on_node: int, replicas_on_node: int) -> dict:
        """Builds the backend and starts the agent loop; on CPU first pins this process to its own share of
        the node's cores. Returns where it runs: pid, torch threads, cores."""
        config, run_name, first_key = self.args
        if not config.gpus_per_replica:
            pin_to_cores(own_cores(rank_on_node, replicas_on_node))
        # The node's own scratch dir: a replica writes nothing the driver reads; the Run re-checks the model
        # and adapter paths on this node.
        self.run = run = Run(replace(config, run_name=run_name, output_dir=tempfile.mkdtemp(prefix="fireharness-replica-"),
                                     shard=None, executor="local"))
        self.tool = run.build_tool()
        self.backend = run.build_backend()
        run.check_context(self.backend, run.new_states([first_key])[0])
        self.loop = run.agent_loop(self.backend, self.tool)
        self.inbox: queue.Queue = queue.Queue()
        self.finished: list = []
        self.failure: Optional[BaseException] = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self.serve, name="agent-loop", daemon=True)
        self.thread.start()
        import torch
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "cores": sorted(affinity())}

    def give(self, keys: list) -> None:
        self.inbox.put(keys)

    def more(self, wait: bool):
        """The agent loop's feed: new states when it has room; blocks only when nothing is running."""
        keys = []
        try:
            keys += self.inbox.get(timeout=None) if wait else self.inbox.get_nowait()
            while True:
                keys += self.inbox.get_nowait()
        except queue.Empty:
            pass
        return self.run.new_states(keys)

    def serve(self) -> None:
        def on_done(state):
            episode = self.run.episode(state, self.tool)
            with self.changed:
                self.finished.append(episode)
                self.changed.notify_all()

        try:
            self.loop.run([], on_done, more=self.more)
        except BaseException as e:  # handed to the driver by the next take()
            with self.changed:
                self.failure = e
                self.changed.notify_all()

    def take(self) -> tuple:
        """(finished episodes since the last take, agent steps so far); waits up to TAKE_WAIT_S for one."""
        with self.changed:
            self.changed.wait_for(lambda: self.finished or self.failure is not None, timeout=TAKE_WAIT_S)
            if self.failure is not None and not self.finished:
                raise self.failure
            finished, self.finished = self.finished, []
            return finished, self.loop.steps_taken

    def close(self) -> None:
        self.backend.close()
        if self.tool is not None:
            self.tool.close()
        shutil.rmtree(self.run.c.output_dir, ignore_errors=True)


def affinity() -> set:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def own_cores(rank_on_node: int, replicas_on_node: int) -> list:
    """This replica's equal share of the cores its process may use (the node's, as Ray starts workers)."""
    cores = sorted(affinity())
    share = max(1, len(cores) // replicas_on_node)
    return cores[rank_on_node * share:(rank_on_node + 1) * share] or cores[-share:]


def pin_to_cores(cores: list) -> None:
    """Ray counts CPUs but pins nothing, and a vLLM CPU engine binds one OpenMP thread to each core of its bind
    list: every core the process may use (``cpu_engine_env``), or a list the driver's environment carried
    over to the workers. Two replicas on one node would then share every core. Each replica's process is
    pinned to its own share; an inherited vLLM layout is dropped so that the engine binds to that share."""
    import torch
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    for inherited in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        os.environ.pop(inherited, None)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    torch.set_num_threads(len(cores))


def ranks_on_nodes(nodes: list) -> list:
    """(rank among the replicas on its node, replicas on that node) for each replica, in order."""
    seen: dict = {}
    ranks = []
    for node in nodes:
        ranks.append(seen.get(node, 0))
        seen[node] = ranks[-1] + 1
    return [(rank, seen[node]) for rank, node in zip(ranks, nodes)]


def check_address(address: str) -> None:
    """An explicit host:port that nothing answers on fails here in seconds, not after Ray's minute of retries."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"--ray_address {address}: give auto, HOST:PORT of the head node (ray start --head) or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RunError(f"--ray_address {address}: no Ray head answers there ({e.strerror or e}); start one with "
                       f"`ray start --head` or check the address") from None


class RayExecutor:
    """Checks the Ray flags and connects before any work; ``execute`` runs the run's remaining episodes."""

    def __init__(self, run: Run):
        self.run = run
        c = run.c
        try:
            import ray
        except ImportError:
            raise RunError("--executor ray needs Ray: pip install .[ray]") from None
        if c.replicas < 1:
            raise RunError(f"--replicas {c.replicas}: give at least 1 replica")
        if c.gpus_per_replica < 0:
            raise RunError(f"--gpus_per_replica {c.gpus_per_replica}: give 0 (CPU) or more")
        self.ray = ray
        self.replica_pids: list = []
        self.replica_threads: list = []  # torch's threads in each replica
        self.replica_cores: list = []  # the cores each replica's process is pinned to (CPU replicas)
        self.resent = 0  # episodes sent again after their replica died
        self.episodes_from: dict = {}  # replica number -> episodes it returned
        if c.ray_address:
            check_address(c.ray_address)
        self.started_cluster = not ray.is_initialized()
        if self.started_cluster:
            try:
                if c.ray_address:
                    ray.init(address=c.ray_address, log_to_driver=False)
                else:  # a local cluster of this machine, gone with this process
                    ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RunError(f"--ray_address {c.ray_address or '(local)'}: cannot connect to Ray: "
                               f"{str(e).splitlines()[0]}") from None
        total = ray.cluster_resources()  # replicas that cannot all be placed would wait for ever
        if c.gpus_per_replica and c.replicas * c.gpus_per_replica > total.get("GPU", 0):
            raise RunError(f"--replicas {c.replicas} x --gpus_per_replica {c.gpus_per_replica:g}: the Ray cluster has "
                           f"{total.get('GPU', 0):g} GPUs")
        if not c.gpus_per_replica and c.replicas > total.get("CPU", 0):
            raise RunError(f"--replicas {c.replicas}: the Ray cluster has {total.get('CPU', 0):g} CPUs, and a replica "
                           f"needs one")

    def replica_options(self) -> list:
        """Ray resources of each replica: GPUs as asked; on CPU an equal share of the cluster's cores (Ray sets
        the actor's OMP threads to it), so that one replica gets every core as an in-process run does."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        c, ray = self.run.c, self.ray
        tp = c.tensor_parallel_size if c.backend == "vllm" else 1
        if c.gpus_per_replica and tp > 1:
            options = []
            for _ in range(c.replicas):
                group = placement_group([{"GPU": c.gpus_per_replica / tp, "CPU": 1}] * tp)
                options.append(dict(num_cpus=0, num_gpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_capture_child_tasks=True)))
            return options
        if c.gpus_per_replica:
            return [dict(num_cpus=1, num_gpus=c.gpus_per_replica)] * c.replicas
        cpus = max(1, int(ray.available_resources().get("CPU", 1)) // c.replicas)
        # Ray sets an actor's OMP_NUM_THREADS to its CPUs only when the driver's environment has none; a driver
        # that ran a vLLM engine has one (the engine's env sets it to every core), and two replicas of 2 threads
        # each on 2 cores ran 2-3x slower. Said explicitly, it holds whatever the driver's environment.
        return [dict(num_cpus=cpus, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(cpus)}})] * c.replicas

    def slice_size(self, todo: int) -> int:
        c = self.run.c
        return max(1, min(c.batch_size, -(-todo // (4 * c.replicas))))

    def execute(self) -> dict:
        ray, run, c = self.ray, self.run, self.run.c
        todo = run.remaining()
        run.announce(len(todo))
        t_start = time.perf_counter()
        stats = {"load_s": 0.0, "loop_s": 0.0, "steps": 0}
        try:
            if todo:
                stats.update(self.run_on_replicas(todo, t_start))
        finally:
            if self.started_cluster:
                ray.shutdown()
        return run.write_results(stats, time.perf_counter() - t_start)

    def run_on_replicas(self, todo: list, t_start: float) -> dict:
        ray, run, c = self.ray, self.run, self.run.c
        remote = ray.remote(max_concurrency=2, max_restarts=0)(Replica)  # give/take beside nothing else
        replicas = [remote.options(**o).remote(c, run.run_name, todo[0]) for o in self.replica_options()]
        try:
            nodes = ray.get([r.node.remote() for r in replicas])
            started = ray.get([r.start.remote(*rank) for r, rank in zip(replicas, ranks_on_nodes(nodes))])
        except ray.exceptions.RayError as e:
            for r in replicas:
                ray.kill(r)
            raise RunError(f"a replica could not start: {cause(e)}") from None
        self.replica_pids = [s["pid"] for s in started]
        self.replica_threads = [s["threads"] for s in started]
        self.replica_cores = [s["cores"] for s in started]
        print(f"{len(replicas)} Ray replicas ready in {time.perf_counter() - t_start:.1f} s", file=sys.stderr)
        load_s = time.perf_counter() - t_start
        t_loop = time.perf_counter()
        pending = deque(todo)
        order = {key: n for n, key in enumerate(todo)}
        held = {r: set() for r in replicas}  # replica -> keys handed out, not yet written
        steps = {r: 0 for r in replicas}
        self.episodes_from = {n: 0 for n in range(len(replicas))}
        takes = {r.take.remote(): r for r in replicas}
        size = self.slice_size(len(todo))
        bar = run.progress(len(todo))
        try:
            while pending or any(held.values()):
                self.hand_out(pending, held, size)
                if not takes:
                    raise RunError(f"all {len(replicas)} Ray replicas died; the {len(run.done)} finished episodes are in "
                                   f"{run.trajs_path}: re-run the same command to resume")
                ready, _ = ray.wait(list(takes), num_returns=1)
                r = takes.pop(ready[0])
                try:
                    episodes, steps[r] = ray.get(ready[0])
                except ray.exceptions.RayActorError as e:  # the process or its node is gone: re-send its work
                    lost = sorted(held.pop(r), key=order.__getitem__)
                    pending.extendleft(reversed(lost))
                    self.resent += len(lost)
                    print(f"\nnote: a Ray replica died ({cause(e)}); {len(lost)} episodes re-sent to the "
                          f"{len(held)} others", file=sys.stderr)
                    continue
                except ray.exceptions.RayTaskError as e:  # a bug or bad input inside the agent loop: stop
                    raise RunError(f"a replica failed: {cause(e)}") from None
                self.episodes_from[replicas.index(r)] += len(episodes)
                for ep in episodes:
                    key = episode_key(ep)
                    held[r].discard(key)
                    if key not in run.done:
                        run.record(ep, bar)
                takes[r.take.remote()] = r
        finally:
            bar.close()
            for r in held:
                try:
                    ray.get(r.close.remote(), timeout=60)
                except ray.exceptions.RayError:
                    pass
                ray.kill(r)
        return {"load_s": load_s, "loop_s": time.perf_counter() - t_loop, "steps": sum(steps.values())}

    def hand_out(self, pending: deque, held: dict, size: int) -> None:
        """Round-robin slices until every replica holds its batch plus one slice; one message per replica."""
        batch = self.run.c.batch_size
        given = {r: [] for r in held}
        while pending:
            takers = [r for r in held if len(held[r]) + len(given[r]) < batch + size]
            if not takers:
                break
            for r in takers:
                for _ in range(min(size, len(pending))):
                    given[r].append(pending.popleft())
        for r, keys in given.items():
            if keys:
                held[r].update(keys)
                r.give.remote(keys)


def cause(error) -> str:
    """The first line of what went wrong inside a replica, without Ray's traceback wrapping."""
    inner = getattr(error, "cause", None) or error
    text = str(inner).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(inner).__name__)[:300]


def execute_on_ray(run: Run) -> dict:
    return RayExecutor(run).execute()
