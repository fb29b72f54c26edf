"""Tool registry: ``from tools import get_tool, ToolConfig``. One module per tool."""
from .base import TOOLS, InvalidAction, Observation, Tool, ToolConfig, ToolSession, ToolSetupError, get_tool, register_tool  # noqa: F401
