"""Where a name points: a local path, or the Hugging Face hub (and whether it answers).

Kept free of torch and transformers so that a command can refuse a hub-only job in a second.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a local path."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
        or Path(name).suffix in {".parquet", ".jsonl", ".json", ".csv", ".txt"}
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout`` seconds.

    Checked once, before any hub download: without it, an offline machine spends about a
    minute in the hub client's retries before the first error.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def hub_cached(repo_id: str) -> bool:
    """Whether the hub id has files in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        files = ("config.json", "tokenizer_config.json")
        return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)
    except ValueError:  # not a valid repo id
        return False
