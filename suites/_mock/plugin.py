from harness.plugins import register_suite

register_suite("mock-v1", "suites._mock.suite:MockSuite", "tiny 2-D reaching task with an image and an instruction (tests only)")
register_suite("mock", "suites._mock.suite:MockSuite", "alias of mock-v1")
