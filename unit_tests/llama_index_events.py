"""Collect the LlamaIndex instrumentation events a block of code dispatches.

Shared by the unit and integration tests of the LlamaIndex classes (the ``events`` fixture
in both conftests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent


class EventCollector(BaseEventHandler):
    events: list[BaseEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "EventCollector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@contextmanager
def collect_events() -> Iterator[list[BaseEvent]]:
    """The events dispatched to the root dispatcher while the block runs, in order."""
    collector = EventCollector(events=[])
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        yield collector.events
    finally:
        root.event_handlers.remove(collector)
