"""`streams bench`: several contenders over the same input on the same local Kafka and Cassandra.

Scenarios (`streams.bench.scenarios`):

- ``ctr``: backlog catch-up of the rolling CTR job by our worker, the naive Faust job, the Quix
  Streams job and the raw-consumer ceiling, each checked against the oracle after every run.
- ``replay``: our worker re-reading the whole backlog as a fresh version, with 1 and more processes.
- ``latency``: each CTR contender fed live at a fixed rate (produce-to-result p50/p99/p99.9), plus
  our fraud path (transaction to score).
- ``fraud`` / ``fraud-latency``: our worker's fraud scoring over a backlog / at a fixed rate.
- ``soak`` / ``state`` (`streams.bench.soak`): our worker's RSS at a steady rate for minutes, and as
  its state grows to 100,000 ads and 1,000,000 customers; CTR and fraud as two phases.

Definitions of every figure: `streams.bench.measure`, `streams.bench.memory` and
docs/benchmarks.md. This module stays empty so that the comparison jobs (`streams.bench.jobs`)
import nothing of the harness.
"""
