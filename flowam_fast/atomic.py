"""Atomic file output: write to a temporary file beside the target, then rename, so a killed
run never leaves a half-written file where a finished one is expected."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in the target's directory; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cached_file(path, cache_dir, name: str, make, what: str) -> Path:
    """`path` if given; else cache_dir/name, first made by make(target) if it is missing (a
    trained helper model kept for the next run)."""
    if path is not None:
        return Path(path)
    if cache_dir is None:
        raise ValueError(f"no {what} given and nowhere to keep a trained one")
    target = Path(cache_dir) / name
    if not target.exists():
        print(f"training the {what} (kept as {target})", flush=True)
        make(target)
    return target
