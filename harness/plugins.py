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


METHODS: Registry["Method"] = Registry("method", lambda: _discover("methods"))
SUITES: Registry["Suite"] = Registry("suite", lambda: _discover("suites"))
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
