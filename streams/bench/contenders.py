"""The contenders of `streams bench`: how each is started, checked and cleaned up after a run.

- ``ours``: the real worker (``python -m streams worker``), a fresh pipeline version per run.
- ``naive-faust``: the same CTR counts the way the Faust docs show it (`jobs/naive_faust.py`).
- ``quix``: the same with Quix Streams' API (`jobs/quix_ctr.py`), if ``quixstreams`` is installed.
- ``raw``: a confluent-kafka consumer that only polls and decodes (`jobs/raw_ceiling.py`).

Each run has its own consumer group (and version, state directory, result rows); all of it is
deleted after the run has been checked.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.bench.check import Check, compare, compare_totals, delete_job_rows, job_windows, our_windows
from streams.bench.latency import Latencies, ctr_latencies
from streams.bench.measure import JobProcess, free_port, start_job
from streams.bench.workload import Oracle
from streams.errors import RuntimeServiceError
from streams.io.kafka import (
    committed_offsets,
    delete_group,
    delete_topics,
    existing_topics,
    high_watermarks,
)
from streams.scrape import samples
from streams.settings import Settings
from streams.versions import result_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """One contender's run: where it reads, where it writes, where its logs and state go."""

    settings: Settings
    keyspace: str
    topic: str
    run_id: str
    out_dir: Path
    latency_file: Path | None = None
    topic_env: dict[str, str] = field(default_factory=dict)  # our worker's STREAMS_TOPICS__*


def delete_group_if_empty(settings: Settings, group: str) -> None:
    """A contender that crashed stays a member until its session times out: its group is left then."""
    try:
        delete_group(settings.kafka, group)
    except RuntimeServiceError as exc:
        log.warning("left consumer group %s behind: %s", group, exc)


def delete_topics_containing(settings: Settings, fragment: str) -> None:
    delete_topics(settings.kafka, [name for name in existing_topics(settings.kafka) if fragment in name])


class Contender(ABC):
    name: str
    description: str

    def unavailable(self) -> str | None:
        """Why this contender cannot run here (None: it can)."""
        return None

    def finished(self, run: RunContext) -> bool:
        """Whether the whole input is done once the progress counters reached it (see `OurWorker`)."""
        return True

    @abstractmethod
    def start(self, run: RunContext) -> list[JobProcess]: ...

    @abstractmethod
    def check(self, run: RunContext, session: Any, oracle: Oracle, texts: Sequence[str]) -> Check: ...

    @abstractmethod
    def cleanup(self, run: RunContext, session: Any, oracle: Oracle) -> None: ...

    @abstractmethod
    def latencies(self, run: RunContext) -> Latencies:
        """(CreateTime, produce-to-result ms) per event of the run (after its processes stopped)."""


class OurWorker(Contender):
    """``streams worker`` processes of one fresh pipeline version in the bench keyspace."""

    def __init__(self, name: str = "ours", workers: int = 1, pipeline: str = "ctr") -> None:
        self.name, self.workers, self.pipeline = name, workers, pipeline
        plural = f"{workers} processes" if workers > 1 else "1 process"
        self.description = f"this project's worker (`streams worker`, {pipeline} pipeline, {plural})"

    @staticmethod
    def version(run: RunContext) -> str:
        return f"bench-{run.run_id}"

    def group(self, run: RunContext) -> str:
        return f"{self.version(run)}-{self.version(run)}"  # app id - version, as `names_of` names it

    def source_group(self, run: RunContext) -> str:
        """The group that reads the bench topic: the version's one group."""
        return self.group(run)

    def finished(self, run: RunContext) -> bool:
        """Done means durable: the group commits offsets only after the results they cover are
        written (and with several processes a rebalance re-delivers what was not committed yet, so
        the summed counters overshoot), so the run ends when the committed offsets reach the end."""
        kafka = run.settings.kafka
        ends = high_watermarks(kafka, run.topic)
        return committed_offsets(kafka, self.source_group(run), run.topic, ends) == ends

    def env(self, run: RunContext) -> dict[str, str]:
        version = self.version(run)
        return {
            **run.topic_env,
            "STREAMS_CASSANDRA__KEYSPACE": run.keyspace,
            "STREAMS_WORKER__APP_ID": version,
            "STREAMS_WORKER__PIPELINE_VERSION": version,
            "STREAMS_WORKER__PIPELINES": f'["{self.pipeline}"]',
            "STREAMS_CTR__TUMBLING": "1m",
            "STREAMS_CTR__GRACE": "1m",
            # Every contender counts a click at its own time (the YSB task); ours would otherwise
            # count it in its impression's windows, one dict lookup per click more.
            "STREAMS_CTR__CLICK_ATTRIBUTION": "click",
        }

    def start(self, run: RunContext) -> list[JobProcess]:
        jobs = []
        for i in range(self.workers):
            port = free_port()
            env = {**self.env(run), "STREAMS_WORKER__METRICS_PORT": str(port)}
            log = run.out_dir / "logs" / f"{self.version(run)}-{i}.log"
            jobs.append(start_job([sys.executable, "-m", "streams", "worker"], env, port, log))
        return jobs

    def check(self, run: RunContext, session: Any, oracle: Oracle, texts: Sequence[str]) -> Check:
        return compare(oracle, our_windows(session, run.keyspace, self.version(run), oracle))

    def latencies(self, run: RunContext) -> Latencies:
        results = result_topic(run.settings.topics.ctr_results, self.version(run))
        return ctr_latencies(run.settings.kafka, run.topic, results)

    def cleanup(self, run: RunContext, session: Any, oracle: Oracle) -> None:
        settings, version, group = run.settings, self.version(run), self.group(run)
        t = settings.topics
        bases = (
            t.ctr_results,
            run.topic_env.get("STREAMS_TOPICS__FRAUD_SCORES", t.fraud_scores),
            run.topic_env.get("STREAMS_TOPICS__FRAUD_CHAIN_HEADS", t.fraud_chain_heads),
            run.topic_env.get("STREAMS_TOPICS__FRAUD_ENTITY_SIGHTINGS", t.fraud_entity_sightings),
            run.topic_env.get("STREAMS_TOPICS__FRAUD_ENTITY_FEATURES", t.fraud_entity_features),
        )
        delete_topics(settings.kafka, [result_topic(base, version) for base in bases])
        delete_topics_containing(settings, f"{group}-")
        for each in {group, self.source_group(run)}:
            delete_group_if_empty(settings, each)
        # its rows go with the bench keyspace's truncation at the end (`runner.bench_keyspace`)
        shutil.rmtree(settings.runtime.home / "faust" / group, ignore_errors=True)


class Job(Contender):
    """A comparison job of `streams.bench.jobs`, one process."""

    module: str
    table: str | None = None

    def group(self, run: RunContext) -> str:
        return f"bench-{self.name}-{run.run_id}"

    def state_dir(self, run: RunContext) -> Path:
        return run.out_dir / "state" / self.group(run)

    def start(self, run: RunContext) -> list[JobProcess]:
        port = free_port()
        options = {
            "--topic": run.topic,
            "--group": self.group(run),
            "--metrics-port": str(port),
            "--run-id": run.run_id,
            "--state-dir": str(self.state_dir(run)),
            "--keyspace": run.keyspace,
            "--table": self.table or "",
        }
        command = [sys.executable, "-m", self.module, *(part for pair in options.items() for part in pair)]
        if run.latency_file is not None:
            command += ["--latency-out", str(run.latency_file)]
        self.state_dir(run).mkdir(parents=True, exist_ok=True)
        return [start_job(command, {}, port, run.out_dir / "logs" / f"{self.group(run)}.log")]

    def check(self, run: RunContext, session: Any, oracle: Oracle, texts: Sequence[str]) -> Check:
        assert self.table is not None
        return compare(oracle, job_windows(session, run.keyspace, self.table, run.run_id, oracle.ads))

    def latencies(self, run: RunContext) -> Latencies:
        if run.latency_file is None or not run.latency_file.exists():
            raise RuntimeServiceError(f"{self.name} wrote no latencies (log: {run.out_dir / 'logs'})")
        return [(created, latency) for created, latency in orjson.loads(run.latency_file.read_bytes())]

    def cleanup(self, run: RunContext, session: Any, oracle: Oracle) -> None:
        group = self.group(run)
        delete_topics_containing(run.settings, group)  # Faust's and Quix's changelog topics name it
        delete_group_if_empty(run.settings, group)
        if self.table is not None:
            delete_job_rows(session, run.keyspace, self.table, run.run_id, oracle.ads)
        shutil.rmtree(self.state_dir(run), ignore_errors=True)
        if run.latency_file is not None:
            run.latency_file.unlink(missing_ok=True)


class NaiveFaust(Job):
    name = "naive-faust"
    module = "streams.bench.jobs.naive_faust"
    table = "bench_naive_ctr"
    description = "the Faust docs' way: agent per event, windowed tables, awaited INSERT per update"


class QuixStreams(Job):
    name = "quix"
    module = "streams.bench.jobs.quix_ctr"
    table = "bench_quix_ctr"
    description = "Quix Streams: tumbling_window().agg().current() into a BatchingSink per checkpoint"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("quixstreams") is None:
            return "quixstreams is not installed (pip install -e '.[bench]')"
        return None


class RawCeiling(Job):
    name = "raw"
    module = "streams.bench.jobs.raw_ceiling"
    description = "confluent-kafka consume() + orjson decode only: one Python process's ceiling"

    def check(self, run: RunContext, session: Any, oracle: Oracle, texts: Sequence[str]) -> Check:
        by_type: dict[str, float] = {}
        for text in texts:
            for labels, value in samples(text, "bench_events_decoded_total"):
                by_type[labels["type"]] = by_type.get(labels["type"], 0.0) + value
        return compare_totals(oracle, by_type)


CTR_CONTENDERS: dict[str, type[Contender]] = {
    "ours": OurWorker,
    "naive-faust": NaiveFaust,
    "quix": QuixStreams,
    "raw": RawCeiling,
}
