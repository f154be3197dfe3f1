"""Reading the artifacts conveyor writes (plans, profiles, configs) with errors that name
the file and what is wrong with it."""

from __future__ import annotations

import json
import os
from typing import Any


def read_document(path: str | os.PathLike, what: str, error: type[Exception]) -> tuple[str, Any]:
    """(path as str, parsed content) of a JSON (.json) or YAML (anything else) file; `error`
    names the file and the problem when it cannot be read or parsed."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            if path.endswith(".json"):
                try:
                    return path, json.load(f)
                except json.JSONDecodeError as e:
                    raise error(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
            import yaml

            try:
                return path, yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise error(f"{path}: not valid YAML ({e})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
