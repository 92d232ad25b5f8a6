"""Which W&B mode a run uses, decided before wandb is imported, and never a long stall.

- ``logger.wandb.mode=online|offline|disabled`` is the user's word for this run: it wins over
  ``WANDB_MODE`` in the environment, and a conflict is named once.
- ``auto``: ``WANDB_MODE`` when set; else online when credentials exist and the W&B server answers
  a TCP connect within ``PROBE_S`` seconds, else offline into the run dir (``wandb sync`` later).
  Without the probe, a key and no network held start-up for about 90 s inside wandb.init.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
from urllib.parse import urlparse

MODES = ("online", "offline", "disabled")
PROBE_S = 3.0
# wandb.init's own limit once we go online (its default is 90 s)
INIT_TIMEOUT_S = 10


def server() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(netrc.netrc().authenticators(server()[0]))
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(host: str, port: int, timeout: float = PROBE_S) -> bool:
    """A TCP connect within ``timeout`` seconds, name lookup included (a lookup with no network can
    hang past any socket timeout, so the probe runs in a thread that is left behind if it does)."""
    result: list[bool] = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def wandb_mode(requested: str, note=print) -> str:
    """The mode to pass to wandb.init (and to set as WANDB_MODE, which wandb reads too)."""
    env = os.environ.get("WANDB_MODE") or None
    if env is None:
        os.environ.pop("WANDB_MODE", None)  # wandb rejects an empty mode; empty means unset
    if requested != "auto":
        if env is not None and env != requested:
            note(f"W&B: logger.wandb.mode={requested} wins over WANDB_MODE={env} from the environment")
        os.environ["WANDB_MODE"] = requested
        return requested
    if env is not None:
        return env
    if not has_credentials():
        return "offline"
    host, port = server()
    if not reachable(host, port):
        note(f"W&B: credentials found but {host}:{port} did not answer within {PROBE_S:g} s: logging offline "
             "into the run dir (upload later with wandb sync)")
        return "offline"
    return "online"
