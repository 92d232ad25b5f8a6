"""A fork server for the tests' CLI runs: one process per test worker imports torch, Hydra and genexp
once, then forks a child for each `python -m genexp ...` the tests ask for.

Why: the suite runs the CLI some 170 times, and each fresh interpreter spent most of its seconds
importing torch before doing anything. A forked child starts from that state but is otherwise a
process of its own (own globals, own Hydra, own exit code, own stdout and stderr), as a subprocess
is. Tests that watch start-up itself (what is imported, signals sent to the process) use a real
subprocess: conftest.genexp(..., fresh=True), or GENEXP_TEST_FORK=0 for every run.

Protocol: one JSON request a line on stdin {argv, cwd, env, out, err, timeout}; one JSON reply a
line on stdout {code} or {timeout: true}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _child(req: dict) -> None:
    """Become `python -m genexp <argv>` run in req's cwd and environment; never returns."""
    os.setpgid(0, 0)  # the parent can kill everything this run starts
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, req["out"]), (2, req["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.stdin, sys.stdout = open(os.devnull), sys.__stdout__  # the server pointed stdout at stderr
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.path[0] = req["cwd"]  # as `python -m` puts the working directory first
    sys.argv = [os.path.join(os.path.dirname(__import__("genexp").__file__), "__main__.py"), *req["argv"]]
    import warnings

    warnings.resetwarnings()
    if os.environ.get("PYTHONWARNINGS") == "ignore":
        warnings.simplefilter("ignore")
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    code = 0
    try:
        import runpy

        runpy.run_module("genexp", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    try:  # what interpreter exit does: join threads, run atexit, flush
        import atexit
        import threading

        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"code": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return {"timeout": True}
        time.sleep(0.02)


def serve() -> None:
    # What every CLI run imports first; importing them here is the whole point. Nothing runs yet:
    # no threads, no Hydra state, no seeds.
    import hydra  # noqa: F401
    import omegaconf  # noqa: F401
    import torch  # noqa: F401
    import torch._inductor.config  # noqa: F401  (torch.use_deterministic_algorithms imports it: seconds a run)
    import torchmetrics  # noqa: F401

    import genexp.cli  # noqa: F401
    import genexp.commands.train  # noqa: F401
    import genexp.config.prepare  # noqa: F401

    reply = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the replies
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(json.dumps(_wait(pid, req["timeout"])), file=reply, flush=True)


if __name__ == "__main__":
    serve()
