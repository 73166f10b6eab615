"""The container's one event loop, on a background thread (no SDK import).

Every coroutine of the author's handlers runs here, whatever asks for it: `discover`,
`oauth` and `callbacks` before the engine exists, the SDK's session managers once it
does (engine.py enters them on this same loop). One loop for the container's life, so
an author's async client made in one request still works in the next. Lambda freezes
the process between invocations, which suspends the idle thread harmlessly.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="metorial-mcp", daemon=True
        )
        self.thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run `coro` on the loop; past `timeout` seconds it is cancelled there (not
        abandoned) and TimeoutError is raised here."""
        if timeout is not None:
            coro = asyncio.wait_for(coro, max(timeout, 0.0))
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        except asyncio.TimeoutError as exc:  # noqa: UP041 (python3.10: not the builtin)
            raise TimeoutError(f"no answer within {timeout} s") from exc


async def call(func: Any, *args: Any) -> Any:
    """Call a handler that may be sync or async; sync ones run off the event loop."""
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await asyncio.to_thread(func, *args)
    if inspect.isawaitable(result):
        return await result
    return result
