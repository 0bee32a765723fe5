"""Method `expert`: the suite's privileged scripted expert (reads simulator state). The ceiling row and
the demonstrator; never a learned model."""
from __future__ import annotations

from harness.interfaces import DataSource, Method, Policy
from methods.expert.config import ExpertConfig


class ExpertMethod(Method):
    name = "expert"
    config_cls = ExpertConfig
    privileged = True

    def distill(self, teacher: Policy | None, data: DataSource, config: ExpertConfig) -> Policy:
        return data.suite.expert()
