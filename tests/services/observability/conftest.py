from coder.tests.services.observability.factories import fake_target

__all__ = ["fake_target"]
