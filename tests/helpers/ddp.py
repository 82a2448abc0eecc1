"""Real ``torch.distributed`` for tests: a pool of spawned gloo ranks, started once per session.

Jobs are module-level functions ``fn(rank, world_size, *args)``; every rank runs the same job
(so collectives line up) and the pool returns each rank's result. Nothing is mocked: metrics
sync through TorchMetrics' own ``gather_all_tensors`` over the gloo process group. A pool that
cannot start raises, so a DDP test fails instead of silently running in one process.
"""

from __future__ import annotations

import importlib
import os
import queue
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2
_START_TIMEOUT = 180.0
_JOB_TIMEOUT = 300.0
_START_ATTEMPTS = 4  # fresh ports tried when the one picked was taken meanwhile


def _free_port() -> int:
    """A port free now: bound to port 0 and released, so another process may take it before rank 0 does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(error: str) -> bool:
    """Whether a rank's start failed because its port was taken (c10d's TCPStore: ``EADDRINUSE``)."""
    return "EADDRINUSE" in error or "address already in use" in error.lower()


class _PortTaken(Exception):
    """A rank could not listen on the pool's port: start again on another."""


def _worker(rank: int, world_size: int, port: int, jobs: Any, results: Any) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=120),
        )
        results.put((rank, True, "ready"))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
        return
    while True:
        job = jobs.get()
        if job is None:
            break
        module, name, args = job
        try:
            fn = getattr(importlib.import_module(module), name)
            results.put((rank, True, fn(rank, world_size, *args)))
        except BaseException:
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class DDPPool:
    """``WORLD_SIZE`` spawned processes joined in one gloo process group."""

    def __init__(self, world_size: int = WORLD_SIZE) -> None:
        """Start the ranks; on a port taken between :func:`_free_port` and rank 0's listen, again on a fresh one.

        Two pytest-xdist workers can pick the same free port; the one whose rank 0 cannot listen
        (``EADDRINUSE``) stops its ranks and starts over, up to ``_START_ATTEMPTS`` times. Any other
        failure to start (a rank's error, the start timeout, a rank that could not be spawned) stops
        and joins every rank already started, then raises its own error (not retried, not hidden): a
        rank left waiting for jobs would outlive the failed test for the rest of the session.
        """
        self.world_size = world_size
        self.broken = False
        self.ports: list[int] = []  # one per attempt
        self._procs: list[Any] = []
        for _ in range(_START_ATTEMPTS):
            try:
                self._spawn(_free_port())
                self._collect(_START_TIMEOUT, "start the gloo process group", retry_on=True)
                return
            except _PortTaken as taken:
                self._kill()
                error = str(taken)
            except BaseException:
                self.broken = True
                self._kill()
                raise
        self.broken = True
        raise RuntimeError(f"DDP pool: failed to start the gloo process group: ports {self.ports} taken:\n{error}")

    def _spawn(self, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.ports.append(port)
        self._jobs = [ctx.Queue() for _ in range(self.world_size)]
        self._results = ctx.Queue()  # fresh: nothing of a stopped attempt is read as this one's
        self._procs = [
            ctx.Process(
                target=_worker, args=(rank, self.world_size, port, self._jobs[rank], self._results), daemon=True
            )
            for rank in range(self.world_size)
        ]
        for proc in self._procs:
            proc.start()

    def _kill(self) -> None:
        """Stop and join an attempt's started ranks (the other rank may wait on the taken port until its timeout)."""
        started = [proc for proc in self._procs if proc.pid is not None]  # a failed spawn leaves some unstarted
        for proc in started:
            proc.kill()
        for proc in started:
            proc.join(timeout=30)

    def _collect(self, timeout: float, what: str, retry_on: bool = False) -> list[Any]:
        """Each rank's result; ``retry_on``: a rank whose port was taken raises :class:`_PortTaken` at once."""
        out: dict[int, Any] = {}
        errors = []
        for _ in range(self.world_size):
            try:
                rank, ok, payload = self._results.get(timeout=timeout)
            except queue.Empty:
                self.broken = True
                raise RuntimeError(f"DDP pool: timed out after {timeout:.0f}s waiting to {what}") from None
            if ok:
                out[rank] = payload
            elif retry_on and _port_taken(payload):
                raise _PortTaken(payload)
            else:
                errors.append(f"rank {rank}:\n{payload}")
        if errors:
            if len(out) + len(errors) < self.world_size:
                self.broken = True
            raise RuntimeError(f"DDP pool: failed to {what}:\n" + "\n".join(errors))
        return [out[rank] for rank in range(self.world_size)]

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = _JOB_TIMEOUT) -> list[Any]:
        """Run ``fn(rank, world_size, *args)`` on every rank; return the results ordered by rank."""
        if self.broken:
            raise RuntimeError("DDP pool is broken by an earlier failure")
        for jobs in self._jobs:
            jobs.put((fn.__module__, fn.__qualname__, args))
        return self._collect(timeout, f"run {fn.__module__}.{fn.__qualname__}")

    def close(self) -> None:
        for jobs in self._jobs:
            jobs.put(None)
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


# every torch.distributed call that talks to the other ranks
COLLECTIVES = (
    "all_gather",
    "all_reduce",
    "barrier",
    "broadcast",
    "all_gather_object",
    "all_gather_into_tensor",
    "reduce_scatter",
    "gather",
    "scatter",
    "send",
    "recv",
    "broadcast_object_list",
    "all_to_all",
)


def count_collectives(fn: Callable[[], Any]) -> int:
    """How many ``torch.distributed`` collectives ``fn()`` calls (each name of :data:`COLLECTIVES` counted)."""
    count = [0]
    saved = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def counting(call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return call(*args, **kwargs)

        return wrapper

    try:
        for name, call in saved.items():
            setattr(dist, name, counting(call))
        fn()
    finally:
        for name, call in saved.items():
            setattr(dist, name, call)
    return count[0]
