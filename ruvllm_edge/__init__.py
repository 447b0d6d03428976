"""ruvllm-edge: a self-learning local LLM daemon for Raspberry Pi-class devices."""

__version__ = "0.1.0"

from .client import Client  # noqa: E402

__all__ = ["Client", "__version__"]
