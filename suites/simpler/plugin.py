"""SIMPLER suites. Cheap to import: no simulator here."""
from harness.plugins import register_suite

register_suite("simpler_tabletop-v1", "suites.simpler.suite:SimplerTabletopSuite",
               "ManiSkill3 tabletop tasks (pick/stack/push/pull/place/peg, 11 tasks) with SIMPLER's action and "
               "control conventions; runs offline (not SIMPLER numbers)", family="simpler")
register_suite("simpler_bridge-v1", "suites.simpler.suite:SimplerBridgeSuite",
               "SIMPLER's four WidowX/Bridge visual-matching tasks via ManiSkill3 (needs the bridge_v2_real2sim "
               "and widowx250s assets)", family="simpler")
