"""What a person watching the run sees: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console as RichConsole
from rich.table import Table


def format_scalars(values: dict[str, float], limit: int = 6) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in list(values.items())[:limit])


class Console:
    def __init__(self, progress: str = "auto"):
        self.out = RichConsole(highlight=False, soft_wrap=True)
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = progress == "rich" or (progress == "auto" and self.out.is_terminal)
        self._said: set[str] = set()

    def info(self, message: str) -> None:
        self.out.print(message, markup=False)

    def note(self, message: str) -> None:
        """A one-line remark on stderr, printed once per run however often it is said."""
        if message not in self._said:
            self._said.add(message)
            self.err.print(f"genexp: {message}", markup=False)

    def table(self, title: str, values: dict[str, float]) -> None:
        if not values:
            return
        table = Table(title=title, show_header=True)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in values.items():
            table.add_row(key, f"{value:.4f}")
        self.out.print(table)

    @contextmanager
    def progress(self, total: int, start: int):
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          TextColumn("{task.fields[scalars]}"), console=self.out, transient=False) as bar:
                task = bar.add_task("train", total=total, completed=start, scalars="")
                yield RichProgress(bar, task)
        else:
            yield PlainProgress(self, total, start)


class RichProgress:
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def advance(self) -> None:
        self.bar.advance(self.task)

    def report(self, step: int, values: dict[str, float]) -> None:
        self.bar.update(self.task, scalars=format_scalars(values, 3))


class PlainProgress:
    """A line per logged step with the rate since the last one (CI logs, sbatch files)."""

    def __init__(self, console: Console, total: int, start: int):
        self.console, self.total = console, total
        self.width = len(str(total))
        self.last_step, self.last_time = start, time.perf_counter()

    def advance(self) -> None:
        pass

    def report(self, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        self.console.info(f"step {step:>{self.width}}/{self.total}  {format_scalars(values)}  {rate:.1f} it/s")
        sys.stdout.flush()


class QuietConsole(Console):
    """The console of a data-parallel rank other than 0: rank 0 speaks for the run."""

    def info(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def table(self, title: str, values: dict[str, float]) -> None:
        pass

    @contextmanager
    def progress(self, total: int, start: int):
        yield SilentProgress()


class SilentProgress:
    def advance(self) -> None:
        pass

    def report(self, step: int, values: dict[str, float]) -> None:
        pass
