"""The embedded default's message broker: kombu's filesystem transport, writing atomically."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """Writes every file a reader may be polling for in full before it appears.

    Kombu's own channel creates a message file in the queue directory and then writes it; a
    worker polling at that instant moves the still empty file away, fails to decode it and
    stops (kombu issue #1551). The same gap exists when an exchange's table file is first
    created. Here each file is written under ``staging_folder`` (on the same file system)
    and then renamed or linked into place, which readers see as one step.
    """

    def _staged(self, payload: bytes) -> str:
        staging = Path(self.transport_options["staging_folder"])
        staging.mkdir(parents=True, exist_ok=True)
        descriptor, path = tempfile.mkstemp(dir=staging, suffix=".part")
        with os.fdopen(descriptor, "wb") as staged:
            staged.write(payload)
        return path

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]  # as kombu's own
        # The name kombu's reader expects: ordered by time, then "<queue>.msg".
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staged = self._staged(str_to_bytes(dumps(payload)))
        try:
            os.replace(staged, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            os.unlink(staged)
            raise ChannelError(f"Cannot add {name!r} to the queue") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        table: Path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # not in stubs
        if not table.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            staged = self._staged(str_to_bytes(dumps([entry])))
            try:
                os.link(staged, table)  # never replaces a table another process just made
                return
            except FileExistsError:
                pass  # it did: add this binding to that table, under its lock, below
            finally:
                os.unlink(staged)
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    """The filesystem transport with :class:`Channel`; ``staging_folder`` is required."""

    Channel = Channel
