"""Edges to the outside world: Kafka (confluent-kafka) and Cassandra (cassandra-driver)."""
