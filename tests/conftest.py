"""Fixtures shared by several test modules: the embedded model and a real OpenAI-compatible vLLM
server on localhost (started once per session: it takes about a minute on 2 cores)."""
import os
import socket
import subprocess
import sys
import time

import pytest

from models.resolve import resolve_model_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


@pytest.fixture(scope="session")
def model_dir():
    return resolve_model_path("smollm2-135m")


@pytest.fixture(scope="session")
def shared_vllm_engine(model_dir):
    """One vLLM engine of the embedded model for the tests that can share it. Made on first use; closing any
    other in-process vLLM engine afterwards (test_loop's) breaks it, so modules collected before test_loop keep
    their own engine."""
    pytest.importorskip("vllm")
    from models import BackendConfig, get_backend

    backend = get_backend("vllm", BackendConfig(modelpath=model_dir, max_model_len=4096, batch_size=16))
    yield backend
    backend.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    import requests

    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    # --enforce-eager: no torch.compile warm-up (minutes on 2 cores); the offline LoRA engine runs
    # eager too, so both compute the same numbers.
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                             "--served-model-name", "smollm2", "--port", str(port), "--host", "127.0.0.1",
                             "--dtype", "float32", "--max-model-len", "2048", "--enable-prefix-caching",
                             "--seed", "0", "--enforce-eager"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 900
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vllm server exited with {proc.returncode}; see {log.name}")
            try:
                if requests.get(f"{url}/models", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                pytest.fail(f"the vllm server did not come up; see {log.name}")
            time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


