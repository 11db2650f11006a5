"""Pipelines: the pure logic each agent runs on a batch of decoded events."""
