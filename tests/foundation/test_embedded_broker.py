"""The embedded default's broker: a worker never reads a message that is still being written."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from kombu import Connection

from tests.foundation.test_settings import manage

TRANSPORT = "config.broker:Transport"
PRODUCERS = 2
MESSAGES = 15  # per producer
# Big enough that writing one takes a while, so a reader polling the queue meanwhile would
# find the file half written if it were visible before it is complete.
PADDING = "x" * 2_000_000


def _options(root: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "staging_folder": str(root / "staging"),
        "store_processed": False,
    }


def _publish(root: Path, tag: str) -> None:
    with Connection("filesystem://", transport=TRANSPORT, transport_options=_options(root)) as c:
        producer = c.Producer()
        for n in range(MESSAGES):
            producer.publish({"id": f"{tag}-{n}", "padding": PADDING}, routing_key="lesson")


def test_a_consumer_polling_beside_busy_producers_reads_every_message_whole(tmp_path):
    for folder in ("queue", "processed", "control"):
        (tmp_path / folder).mkdir()
    received: list[str] = []
    unreadable: list[str] = []
    with Connection(
        "filesystem://", transport=TRANSPORT, transport_options=_options(tmp_path)
    ) as connection:
        queue = connection.SimpleQueue("lesson")  # declared and bound before anyone publishes
        fork = multiprocessing.get_context("fork")
        producers = [fork.Process(target=_publish, args=(tmp_path, t)) for t in "ab"[:PRODUCERS]]
        for process in producers:
            process.start()
        deadline = time.monotonic() + 60
        while len(received) + len(unreadable) < PRODUCERS * MESSAGES:
            assert time.monotonic() < deadline, f"only {len(received)} messages arrived"
            try:
                message = queue.get(block=False)
            except queue.Empty:
                continue  # poll as fast as a worker would, to meet files mid-write if any
            except ValueError as exc:  # a half-written file does not decode
                unreadable.append(repr(exc))
                continue
            assert message.payload["padding"] == PADDING
            received.append(message.payload["id"])
            message.ack()
        for process in producers:
            process.join(timeout=30)
            assert process.exitcode == 0
    assert unreadable == []
    assert sorted(received) == sorted(f"{t}-{n}" for t in "ab" for n in range(MESSAGES))
    assert list((tmp_path / "staging").iterdir()) == []  # nothing left behind


def test_the_embedded_default_publishes_through_that_transport(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from config.celery import app; "
        "t = app.connection_for_write().transport; print(type(t).__module__, type(t).__name__)",
        RINGFENCE_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "config.broker Transport" in result.stdout
