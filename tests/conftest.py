from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.ddp import DDPPool


class RestartingPool:
    """The session's DDP pool; a job that broke it (timeout, dead rank) gets a fresh one next time."""

    def __init__(self) -> None:
        self._pool = DDPPool()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        if self._pool.broken:
            self._pool.close()
            self._pool = DDPPool()
        return self._pool.run(fn, *args, **kwargs)

    def close(self) -> None:
        self._pool.close()


@pytest.fixture(scope="session")
def ddp_pool() -> Iterator[RestartingPool]:
    """Two spawned gloo ranks shared by every DDP test of the session."""
    pool = RestartingPool()
    yield pool
    pool.close()
