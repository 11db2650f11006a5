"""The smoke pipeline: one Cassandra row per valid event. Proves Kafka -> worker -> Cassandra."""
