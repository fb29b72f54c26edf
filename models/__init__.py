"""Backend registry: ``from models import get_backend, BackendConfig``. One module per backend."""
from .base import BACKENDS, Backend, BackendConfig, BackendSetupError, Generation, GenerationRequest, fits_context, get_backend, register_backend  # noqa: F401
