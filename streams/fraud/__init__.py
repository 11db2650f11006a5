"""Payment fraud signals: pure logic (no Kafka, Cassandra, Faust or Prometheus)."""
