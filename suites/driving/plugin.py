from harness.plugins import register_suite

_E = "suites.driving.suite:DrivingSuite"
for _name in ("intersection", "roundabout", "merge", "highway"):
    register_suite(f"driving_{_name}-v1", _E, f"closed-loop driving on highway-env: {_name} with language instructions",
                   kwargs={"scenarios": [_name], "suite_id": f"driving_{_name}-v1"})
register_suite("driving", _E, "all driving scenarios (intersection, roundabout, merge, highway) on highway-env",
               kwargs={"scenarios": ["intersection", "roundabout", "merge", "highway"], "suite_id": "driving"})
