"""The extraction of ``mp2amp migrate`` running in the background while the identity pass
reads the windows already staged, in window order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Extraction:
    """The extraction running in the background, and an event per window it has to stage."""

    task: asyncio.Future[None]
    staged: dict[str, asyncio.Event]
    restaged: dict[str, int]  # windows staged again -> the records the ledger had

    async def ready(self, window_id: str) -> None:
        """Returns once ``window_id`` is staged; raises what stopped the extraction."""
        event = self.staged.get(window_id)
        if event is None or event.is_set():
            return
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([waiter, self.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            self.task.result()  # the extraction failed: its error, not a hang
            raise RuntimeError(f"extraction ended without staging {window_id}")

    async def finished(self) -> None:
        await self.task
