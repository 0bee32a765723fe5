"""The project's registries: METHODS, SUITES and DEVICES, filled by discovering plug-in folders.

Each ``methods/<name>/plugin.py`` and ``suites/<name>/plugin.py`` calls ``register_method`` /
``register_suite`` with string entry points; importing a ``plugin.py`` must stay cheap (no torch,
no simulator). Device profiles are data: ``harness/devices/*.yaml``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.interfaces import Method, Suite

ROOT = Path(__file__).resolve().parent.parent


def _discover(package: str) -> None:
    for plugin in sorted((ROOT / package).glob("*/plugin.py")):
        importlib.import_module(f"{package}.{plugin.parent.name}.plugin")


def _discover_devices() -> None:
    for path in sorted((ROOT / "harness" / "devices").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        DEVICES.register(data["name"], lambda data=data: data, data.get("description", ""), kind=data.get("kind"))


def _discover_suites() -> None:
    """Suite plug-ins, then an unversioned alias per family: ``libero_object`` -> ``libero_object-v1`` (the newest
    version), unless the bare name is registered itself (e.g. the group suite ``libero``)."""
    import re

    _discover("suites")
    newest: dict[str, tuple[int, str]] = {}
    for sid in SUITES.names():
        m = re.fullmatch(r"(.+)-v(\d+)", sid)
        if m and int(m.group(2)) >= newest.get(m.group(1), (-1, ""))[0]:
            newest[m.group(1)] = (int(m.group(2)), sid)
    for base, (_, sid) in newest.items():
        if base not in SUITES.names():
            SUITES.alias(base, sid)


METHODS: Registry["Method"] = Registry("method", lambda: _discover("methods"))
SUITES: Registry["Suite"] = Registry("suite", _discover_suites)
DEVICES: Registry[dict] = Registry("device", _discover_devices)


def register_method(name: str, entry_point: str, description: str, **meta: Any) -> None:
    """Register a method class (``"methods.x.adapter:XMethod"``); meta may hold ``variants`` (list of str)."""
    METHODS.register(name, entry_point, description, **meta)


def register_suite(suite_id: str, entry_point: str, description: str, *, kwargs: dict | None = None,
                   **meta: Any) -> None:
    """Register a suite factory under a versioned id (``name-vN``; a group id like ``libero`` may omit it)."""
    SUITES.register(suite_id, entry_point, description, kwargs=kwargs, **meta)


def alias_method(name: str, target: str) -> None:
    """Another name for a registered method (``teacher`` -> ``reference``); runs are filed under the target."""
    METHODS.alias(name, target)


def canonical_method_id(method_id: str) -> str:
    """``"teacher@regression"`` -> ``"reference@regression"`` (aliases resolved; variants kept)."""
    name, variant = split_method_id(method_id)
    name = METHODS.canonical(name)
    return name if variant is None else f"{name}@{variant}"


def canonical_suite_id(suite_id: str) -> str:
    """``"libero_object"`` -> ``"libero_object-v1"`` (unversioned names resolved; results are filed under this)."""
    return SUITES.canonical(suite_id)


def split_method_id(method_id: str) -> tuple[str, str | None]:
    """``"fastv@keep0.5"`` -> ``("fastv", "keep0.5")``."""
    name, sep, variant = method_id.partition("@")
    if sep and not variant:
        raise ValueError(f"method id {method_id!r} has an empty variant after '@'")
    return name, (variant or None)


def make_method(method_id: str) -> "Method":
    name, variant = split_method_id(method_id)
    method = METHODS.make(name)
    method.variant = variant
    if variant is not None:
        method.check_variant(variant)
    return method


def make_suite(suite_id: str) -> "Suite":
    return SUITES.make(suite_id)
