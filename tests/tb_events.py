"""Read TensorBoard event files back (scalars and text) for assertions."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_events(log_dir: str | Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[str]]]:
    """All scalars ``{tag: [(step, value)]}`` and texts ``{tag: [markdown]}`` under ``log_dir``."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    texts: dict[str, list[str]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["tensors"]:
            for e in acc.Tensors(tag):
                texts.setdefault(tag, []).extend(
                    s.decode() for s in e.tensor_proto.string_val
                )
    return scalars, texts
