"""What a person watching the run sees: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

from rich.console import Console as RichConsole
from rich.table import Table


def format_scalars(values: dict[str, float], limit: int = 6) -> str:
    """The losses and metrics of a log line; the throughput keys (train/...) have their own place."""
    shown = [(k, v) for k, v in values.items() if not k.startswith("train/")]
    return "  ".join(f"{k} {v:.4g}" for k, v in shown[:limit])


def speed_text(values: dict[str, float]) -> str:
    """'kimg 12.8  812 img/s' from a log line's throughput keys ('' before the first)."""
    from genexp.training.throughput import rate_text

    if "train/kimg" not in values:
        return ""
    return f"kimg {values['train/kimg']:.1f}  {rate_text(values.get('train/images_per_s', 0.0), 'img')}"


class Counter:
    """'eval: fake samples 1,024/2,000  312.4 img/s  ETA 3 s' at most every ``every_s`` seconds and at
    the end, for work that otherwise says nothing for a minute (eval, sample, project, phema)."""

    def __init__(self, say: Callable[[str], None], what: str, total: int, unit: str = "img",
                 every_s: float = 5.0):
        self.say, self.what, self.total, self.unit, self.every_s = say, what, total, unit, every_s
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, done: int) -> None:
        from genexp.training.throughput import duration, rate_text

        self.done = done
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = f"  ETA {duration((self.total - done) / rate)}" if done < self.total and rate > 0 else ""
        self.say(f"{self.what} {done:,}/{self.total:,}  {rate_text(rate, self.unit)}{eta}")


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

            fields = (TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[speed]}"),
                      TextColumn("{task.fields[scalars]}"))
            with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), *fields, console=self.out,
                          transient=False) as bar:
                task = bar.add_task("train", total=total, completed=start, scalars="", speed="", rate="")
                yield RichProgress(bar, task)
        else:
            yield PlainProgress(self, total, start)


class RichProgress:
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def advance(self) -> None:
        self.bar.advance(self.task)

    def report(self, step: int, values: dict[str, float]) -> None:
        from genexp.training.throughput import rate_text

        task = next(t for t in self.bar.tasks if t.id == self.task)
        self.bar.update(self.task, scalars=format_scalars(values, 3), speed=speed_text(values),
                        rate=rate_text(task.speed or 0.0))


class PlainProgress:
    """A line per logged step with the rate since the last one (CI logs, sbatch files)."""

    def __init__(self, console: Console, total: int, start: int):
        self.console, self.total = console, total
        self.width = len(str(total))
        self.last_step, self.last_time = start, time.perf_counter()
        self.first_step, self.first_time = start, self.last_time

    def advance(self) -> None:
        pass

    def report(self, step: int, values: dict[str, float]) -> None:
        from genexp.training.throughput import duration, rate_text

        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        overall = (step - self.first_step) / max(now - self.first_time, 1e-9)  # the ETA's rate: steadier
        eta = f"  ETA {duration((self.total - step) / overall)}" if step < self.total and overall > 0 else ""
        speed = speed_text(values)
        self.console.info(f"step {step:>{self.width}}/{self.total}  {format_scalars(values)}  {rate_text(rate)}"
                          + (f"  {speed}" if speed else "") + eta)
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
