"""Fixtures for library builds: the same store root and context directory as the build tests."""

from tests.build.conftest import ctx, root

__all__ = ["ctx", "root"]
