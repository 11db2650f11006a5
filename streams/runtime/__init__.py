"""The local, Docker-free runtime: Kafka, Cassandra and Prometheus started from official artifacts."""
