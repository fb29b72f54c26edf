"""Backend registry: ``from models import get_backend, BackendConfig``. One module per backend."""
from .base import BACKENDS, Backend, BackendConfig, BackendSetupError, Generation, GenerationRequest, context_full, get_backend, register_backend  # noqa: F401
