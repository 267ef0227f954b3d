"""The one error type of benchmark loading, so callers can tell bad input from bugs."""


class BenchmarkError(ValueError):
    """A benchmark could not be loaded; the message says what is wrong and where."""
