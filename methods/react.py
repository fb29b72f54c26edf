"""ReAct (Yao et al., 2023): interleaved Thought, Action, Observation."""
from .base import Method, register_method


@register_method("react")
class ReAct(Method):
    name = "react"
