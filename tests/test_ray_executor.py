"""Agent episodes on a real local Ray cluster (2 CPUs, a small object store), the real embedded model on the
hf backend, real trajectory files: two replicas finish a run with every index once though one replica's
process is SIGKILLed mid-run; the driver SIGKILLed and re-run resumes
without duplicates. Shards: a deterministic partition, merged twice into the same file, read by the
leaderboard as one run. Bad flags stop before any work with one line."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fireharness.paths import ROOT
from fireharness.records import read_episodes
from generation import Run, RunConfig, main, parse_args

ray = pytest.importorskip("ray")

N = 6
# The lenient protocol: one generation per step (FireAct's loop regenerates a text without `Action: ` up to 5
# times, most of a tiny run's time; the protocols have their own tests).
ARGS = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--task_end_index", str(N), "--evaluate",
        "--backend", "hf", "--method", "react", "--tool", "google", "--max_steps", "2", "--max_tokens", "16",
        "--batch_size", "2", "--protocol", "lenient"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module (tests connect drivers to it, as to a real cluster's head)."""
    already = ray.is_initialized()
    with pytest.MonkeyPatch.context() as mp:
        # As after a vLLM engine ran in this process (its env sets OMP_NUM_THREADS to every core): the replicas
        # must still get one thread per CPU they hold and a core of their own, not oversubscribe the cores.
        mp.setenv("OMP_NUM_THREADS", str(os.cpu_count()))
        mp.setenv("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, range(os.cpu_count()))))
        if not already:
            ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
        if not already:
            ray.shutdown()


def make_run(tmp_path, *extra) -> Run:
    return Run(parse_args(ARGS + ["--output_dir", str(tmp_path), "--run_name", "ray", "--executor", "ray", *extra]))


def keys(path: Path) -> Counter:
    return Counter((ep.index, ep.sample) for ep in read_episodes(path))


def expected(run: Run) -> Counter:
    return Counter((i, 0) for i in run.indices)


@pytest.fixture(scope="module")
def two_replica_run(cluster, tmp_path_factory):
    """One run of N questions on two replicas, one of whose processes is SIGKILLed once the first episode is
    written (its episodes also feed the shard test). One run for both properties: each run costs two model
    loads in the actors."""
    from experiments.ray_executor import RayExecutor

    run = make_run(tmp_path_factory.mktemp("two"), "--replicas", "2")
    executor = RayExecutor(run)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=executor.execute()), daemon=True)
    thread.start()
    deadline = time.time() + 600
    while not (run.trajs_path.exists() and run.trajs_path.read_text().count("\n") >= 1):
        assert thread.is_alive() and time.time() < deadline, "the run ended or stalled before any episode"
        time.sleep(0.2)
    victim = executor.replica_pids[0]
    os.kill(victim, signal.SIGKILL)  # the replica's process, for real
    thread.join(timeout=900)
    assert not thread.is_alive() and "result" in outcome
    return run, executor, outcome["result"]


def test_two_replicas_finish_every_index_once_though_one_is_killed(two_replica_run):
    run, executor, result = two_replica_run
    assert keys(run.trajs_path) == expected(run)
    assert len(executor.replica_pids) == 2 and len(set(executor.replica_pids)) == 2
    assert os.getpid() not in executor.replica_pids  # episodes ran in the actors' processes
    assert executor.replica_threads == [1, 1]  # a core each, whatever OMP_NUM_THREADS the driver had
    cores = executor.replica_cores  # pinned to their own cores (Ray pins none), whatever bind list it had
    assert [len(c) for c in cores] == [1, 1] and not set(cores[0]) & set(cores[1])
    assert executor.resent >= 1  # the killed replica held unfinished work, and it was sent again
    assert executor.episodes_from[1] >= 1, executor.episodes_from  # the survivor did it
    assert result["n_episodes"] == N and result["steps_this_invocation"] > 0


def test_a_driver_sigkilled_and_rerun_resumes_without_duplicates(cluster, tmp_path):
    cmd = [sys.executable, str(ROOT / "generation.py"), *ARGS, "--output_dir", str(tmp_path), "--run_name", "ray",
           "--executor", "ray", "--replicas", "2", "--ray_address", cluster]
    trajs = tmp_path / "trajs" / "ray.jsonl"
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
        deadline = time.time() + 600
        while not (trajs.exists() and trajs.read_text().count("\n") >= 1):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    written = keys(trajs)
    assert 1 <= sum(written.values()) < N and max(written.values()) == 1
    from experiments.ray_executor import RayExecutor

    run = make_run(tmp_path, "--replicas", "2")
    assert len(run.remaining()) == N - sum(written.values())  # resumes from what the killed driver wrote
    RayExecutor(run).execute()
    assert keys(trajs) == expected(run)


def test_shards_partition_the_run_and_merge_idempotently(two_replica_run, tmp_path):
    """Real episodes (the two-replica run's), written as a 3-job array would have, one torn line."""
    from fireharness.shards import main as shards_main
    from leaderboard import main as leaderboard_main

    whole = two_replica_run[0]
    shards = [Run(parse_args(ARGS + ["--output_dir", str(tmp_path), "--run_name", "ray", "--shard", f"{i}/3"]))
              for i in range(3)]
    assert sorted(i for s in shards for i in s.indices) == sorted(whole.indices)  # a partition of the run
    assert [s.indices for s in shards] == [whole.indices[i::3] for i in range(3)]
    assert [s.trajs_path.name for s in shards] == [f"ray.shard-{i}-of-3.jsonl" for i in range(3)]
    by_index = {ep.index: ep for ep in read_episodes(whole.trajs_path)}
    for shard in shards:
        for i in shard.indices:
            shard.record(by_index[i])
    with open(shards[1].trajs_path, "a") as f:
        f.write('{"task": "hotpotqa", "index": 99, "que')  # a job killed mid-append
    with open(shards[0].trajs_path, "a") as f:  # a record repeated (two copies of a shard's job both ran)
        f.write(shards[0].trajs_path.read_text().splitlines()[0] + "\n")
    files = [str(s.trajs_path) for s in shards]
    assert shards_main(["merge", *files]) == 0
    merged = tmp_path / "trajs" / "ray.jsonl"
    first = merged.read_bytes()
    assert keys(merged) == expected(whole)
    assert shards_main(["merge", *files]) == 0
    assert merged.read_bytes() == first
    # The re-run unsharded command finds every episode done, runs nothing and writes the run's results.
    rerun = Run(parse_args(ARGS + ["--output_dir", str(tmp_path), "--run_name", "ray"]))
    assert rerun.remaining() == []
    result = rerun.execute()
    assert result["n_episodes"] == N and result["em"] == json.loads(whole.results_path.read_text())["em"]
    # The leaderboard reads the shards of one run as one run of N questions.
    os.remove(merged)
    from fireharness.view.sources import load_runs

    runs = load_runs([tmp_path / "trajs"])
    assert [(r.name, len(r.questions), r.n_intended) for r in runs] == [("ray", N, N)]
    assert leaderboard_main([str(tmp_path / "trajs")]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--replicas", "0"], "--replicas 0"),
    (["--ray_address", "127.0.0.1:9"], "--ray_address 127.0.0.1:9"),
    (["--shard", "3/2"], "--shard 3/2"),
    (["--executor", "slurm"], "--executor 'slurm'"),
])
def test_bad_flags_stop_before_any_work(tmp_path, capfd, flags, message):
    executor = [] if "--executor" in flags else ["--executor", "ray"]
    assert main(ARGS + ["--output_dir", str(tmp_path), *executor, *flags]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not list(tmp_path.rglob("*.jsonl"))


def test_without_ray_installed_the_line_says_how_to_install(tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the package
    assert main(ARGS + ["--output_dir", str(tmp_path), "--executor", "ray"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --executor ray needs Ray: pip install .[ray]"
