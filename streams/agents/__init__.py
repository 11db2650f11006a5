"""Faust agents: thin async wrappers that decode a batch, call the pure logic and hand results to sinks."""
