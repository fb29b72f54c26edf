"""Method registry: io, cot, react, act, reflexion. One module per method; the batched loop that
runs any of them is ``methods.agent``."""
from .base import FORMATS, METHODS, AgentState, Method, register_method  # noqa: F401
from .prompts import FewShot, load_fewshot  # noqa: F401
