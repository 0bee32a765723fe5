from dataclasses import dataclass

from harness.interfaces import MethodConfig


@dataclass
class ExpertConfig(MethodConfig):
    """The suite's privileged scripted expert has no trainable settings; suites keep theirs in protocol.yaml."""
