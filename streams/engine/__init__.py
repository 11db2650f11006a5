"""The streaming engine: one bulk consumer per worker drives every pipeline.

It consumes batches, hands each partition's messages to its pipeline's pure ``fold``, and at every
checkpoint makes the results durable in one fixed order (``checkpoint.Checkpoint``): rows in
Cassandra, then result records, then dead letters acknowledged by Kafka, and only then offsets.
Pipelines never import Kafka, Cassandra, Faust or Prometheus; the engine never imports Faust.
"""
