"""Betty's configuration classes: ``Config`` (per problem) and ``EngineConfig``."""
from .engine_dataclass import EngineConfig
from .problem_dataclass import Config

__all__ = ["Config", "EngineConfig"]
