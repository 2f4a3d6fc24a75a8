"""The running tests' fixtures (a store with the busybox image, a project that is taken down after
the test), shared by every module that starts containers."""

from tests.compose.test_up import project, root  # noqa: F401
