"""package.json for a web model folder, so `npm install ./web_model` (or a packed tarball) gives an importable
package: ES module entry model.js, its declarations, the model files, and TF.js as a peer dependency (the app
brings its own copy, so the model and the app share one TF.js and one backend)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

TFJS_PEER_RANGE = "^4.22.0"
DEFAULT_VERSION = "1.0.0"
MAX_NAME = 214  # npm's limit


def package_name(title: str) -> str:
    """An npm package name from the model's name: ``TinyCNN`` -> ``tiny-cnn``, ``my_net`` -> ``my-net``."""
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", title)
    name = re.sub(r"[^a-z0-9.-]+", "-", kebab.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-.")[:MAX_NAME].rstrip("-.")
    return name or "web-model"


def is_valid_package_name(name: str) -> bool:
    """npm's rules for a new package name: lowercase, URL-safe, optionally scoped, not starting with . or _."""
    pattern = r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$"
    return len(name) <= MAX_NAME and re.match(pattern, name) is not None


def package_json(*, name: str, version: str, description: str, shards: Sequence[str]) -> dict[str, Any]:
    """The package.json data: `shards` are the weight files model.json lists (shipped with the package)."""
    return {
        "name": name,
        "version": version,
        "description": description,
        "private": True,
        "type": "module",
        "main": "./model.js",
        "module": "./model.js",
        "types": "./model.d.ts",
        "exports": {
            ".": {"types": "./model.d.ts", "default": "./model.js"},
            "./model.json": "./model.json",
            "./package.json": "./package.json",
        },
        "files": ["model.js", "model.d.ts", "model.json", *shards],
        "sideEffects": False,
        "peerDependencies": {"@tensorflow/tfjs": TFJS_PEER_RANGE},
    }
