"""The exception tree: one root, a few meaningful branches.

The CLI turns any `StreamsError` into one clear line on stderr and a non-zero exit.
"""


class StreamsError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(StreamsError):
    """A setting or a command-line argument that cannot work."""


class RuntimeServiceError(StreamsError):
    """A local service (Kafka, Cassandra, Prometheus) could not be fetched, started or reached."""


class SinkError(StreamsError):
    """A result could not be written durably."""
