from localstack.paths import ROOT

__all__ = ["ROOT"]
