"""Small `docker save` archives for tests that need a verify image archive.

The layout `docker save` writes (and `docker load` reads): manifest.json
naming the image config and its layers, the config JSON, one layer tar.
The image ID is the SHA-256 of the config, as Docker computes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_docker_archive(path: Path, payload: bytes = b"#!/bin/sh\n") -> str:
    """Write a one-layer image archive to `path`; return its image ID (sha256:...)."""
    layer_raw = io.BytesIO()
    with tarfile.open(fileobj=layer_raw, mode="w") as layer_tar:
        _add(layer_tar, "bin/true", payload)
    layer = layer_raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
         "rootfs": {"type": "layers", "diff_ids": [diff_id]}},
        sort_keys=True,
    ).encode()
    image_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_hex}.json", "RepoTags": ["functions-runtime/verify:test"], "Layers": [f"{diff_id[7:]}/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        _add(tar, "manifest.json", manifest)
        _add(tar, f"{image_hex}.json", config)
        _add(tar, f"{diff_id[7:]}/layer.tar", layer)
    return f"sha256:{image_hex}"
