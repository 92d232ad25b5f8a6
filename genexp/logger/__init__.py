"""One interface, three sinks: the console, metrics.jsonl in the run dir, and W&B."""

from genexp.logger.console import Console, QuietConsole
from genexp.logger.run_logger import RunLogger, SilentLogger

__all__ = ["Console", "QuietConsole", "RunLogger", "SilentLogger"]
