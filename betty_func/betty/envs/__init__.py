"""Betty's ``Env`` (shared data for several problems)."""
from .env_base import Env

__all__ = ["Env"]
