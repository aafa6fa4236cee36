"""Running commands: in the machine's namespaces, or in a node's network and mount namespaces."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

_START = time.monotonic()


def log(msg: str) -> None:
    print(f"[cluster {time.monotonic() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A step failed; the message says which and why."""


def run(
    argv: Sequence[str | os.PathLike],
    *,
    check: bool = True,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            env=full_env,
            cwd=cwd,
            input=input,
            text=True,
            timeout=timeout,
            stdout=subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None),
            stderr=subprocess.PIPE if capture or quiet else None,
        )
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{' '.join(argv)}: timed out after {timeout}s") from e
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip() if (capture or quiet) else ""
        raise Failed(f"{' '.join(argv)}: exit {proc.returncode}" + (f": {detail}" if detail else ""))
    return proc


def out(argv: Sequence[str | os.PathLike], **kw) -> str:
    return run(argv, capture=True, **kw).stdout


def in_node(node, argv: Sequence[str | os.PathLike]) -> list[str]:
    """argv run inside a node: its network namespace and its mount namespace."""
    return [
        "nsenter",
        f"--net=/run/netns/{node.netns}",
        f"--mount={node.mount_ns}",
        "--",
        *[str(a) for a in argv],
    ]


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """Polls check() until it returns something truthy; raises Failed naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Failed as e:
            last_error = e
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last: {last_error})" if last_error else ""))
        time.sleep(interval)
