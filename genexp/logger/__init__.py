"""One interface, three sinks: the console, metrics.jsonl in the run dir, and W&B."""

from genexp.logger.console import Console
from genexp.logger.run_logger import RunLogger

__all__ = ["Console", "RunLogger"]
