from harness.plugins import register_method

register_method("mock", "methods._mock.adapter:MockMethod",
                "tiny transformer + colour read-out for the mock suite; variants teacher/broken/nan/wrong_shape/raise",
                variants=["teacher", "broken", "nan", "wrong_shape", "raise"])
