"""Rolling click-through rate on sparse clickstream: pure logic (no Kafka, Cassandra or Faust)."""
