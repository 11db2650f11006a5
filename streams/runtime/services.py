"""The three local services: how each is fetched, configured, started and health-checked."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.error import URLError

from streams.errors import RuntimeServiceError
from streams.io.cassandra import cql_ready
from streams.io.kafka import broker_ready
from streams.runtime.artifacts import resolve_jars
from streams.runtime.java import find_java
from streams.runtime.process import ManagedProcess
from streams.settings import Settings


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port)


def _render(template: Path, target: Path, **values: object) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(Template(template.read_text()).substitute(values))
    return target


def self_signed_keystore(java: Path, directory: Path) -> tuple[Path, str]:
    """A PKCS12 keystore with a self-signed certificate for 127.0.0.1/localhost, made once with the
    JDK's keytool, and its CA file (``ca.pem``) for clients. The password is random, kept beside it."""
    keystore, password_file, ca = (
        directory / "broker.p12",
        directory / "keystore.password",
        directory / "ca.pem",
    )
    if keystore.exists() and password_file.exists() and ca.exists():
        return keystore, password_file.read_text().strip()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(24)
    password_file.write_text(password)
    password_file.chmod(0o600)
    keystore.unlink(missing_ok=True)
    keytool = str(java.resolve().parent / "keytool")
    common = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", password, "-alias", "broker"]
    steps = [
        [keytool, "-genkeypair", *common, "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
         "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost"],
        [keytool, "-exportcert", *common, "-rfc", "-file", str(ca)],
    ]  # fmt: skip
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeServiceError(f"keytool failed: {(result.stderr or result.stdout).strip()[:200]}")
    return keystore, password


@dataclass(frozen=True)
class Service:
    """A local service: its directory under the runtime home, its process and its ports."""

    name: str
    settings: Settings

    @property
    def home(self) -> Path:
        return self.settings.runtime.home / self.name

    @property
    def process(self) -> ManagedProcess:
        run = self.settings.runtime.home / "run"
        return ManagedProcess(self.name, run / f"{self.name}.pid", self.home / f"{self.name}.log")

    def ports(self) -> dict[str, int]:
        raise NotImplementedError

    def address(self) -> str:
        raise NotImplementedError

    def prepare(self) -> list[str]:
        """Fetch and configure; returns the command line that starts the service."""
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def data_dirs(self) -> list[Path]:
        return [self.home]


class Kafka(Service):
    def address(self) -> str:
        return f"kafka://{self.settings.kafka.bootstrap}"

    def prepare(self) -> list[str]:
        runtime = self.settings.runtime
        java = find_java()
        deploy = self.settings.deploy_dir / "kafka"
        libs = resolve_jars(
            deploy / "pom.xml",
            runtime.home / "lib" / f"kafka-{runtime.kafka_version}",
            {"kafka.version": runtime.kafka_version},
            self.home / "maven.log",
        )
        config = _render(
            deploy / "server.properties",
            self.home / "server.properties",
            port=self.ports()["kafka"],
            controller_port=runtime.kafka_controller_port,
            log_dir=self.home / "data",
            partitions=self.settings.kafka.partitions,
            **self._sasl_values(java),
        )
        classpath = f"{libs}/*"
        if not (self.home / "data" / "meta.properties").exists():
            self._format_storage(java, classpath, config)
        heap = runtime.kafka_heap
        return [
            str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{deploy / 'log4j2.yaml'}",
            "-cp", classpath, "kafka.Kafka", str(config),
        ]  # fmt: skip

    def _sasl_values(self, java: Path) -> dict[str, str]:
        port = self.settings.runtime.kafka_sasl_port
        if port is None:
            return {"sasl_listener": "", "sasl_config": ""}
        keystore, password = self_signed_keystore(java, self.home / "tls")
        config = "\n".join([
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"ssl.keystore.location={keystore}",
            f"ssl.keystore.password={password}",
            "ssl.keystore.type=PKCS12",
        ])  # fmt: skip
        return {"sasl_listener": f",SASL_SSL://127.0.0.1:{port}", "sasl_config": config}

    def ports(self) -> dict[str, int]:
        _, port = _host_port(self.settings.kafka.bootstrap)
        ports = {"kafka": port, "kafka controller": self.settings.runtime.kafka_controller_port}
        if self.settings.runtime.kafka_sasl_port is not None:
            ports["kafka SASL_SSL"] = self.settings.runtime.kafka_sasl_port
        return ports

    def _format_storage(self, java: Path, classpath: str, config: Path) -> None:
        """Format the KRaft metadata log once, with a cluster id kept beside it."""
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        # "--cluster-id=ID": a base64 id may start with "-", which "-t ID" would read as an option.
        argv = [
            str(java), "-cp", classpath, "kafka.tools.StorageTool", "format",
            f"--cluster-id={id_file.read_text().strip()}", "-c", str(config), "--ignore-formatted",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["unknown error"]
            raise RuntimeServiceError(f"cannot format Kafka storage in {self.home}: {reason[0]}")

    def healthy(self) -> bool:
        return broker_ready(self.settings.kafka)


class Cassandra(Service):
    def ports(self) -> dict[str, int]:
        return {
            "cassandra CQL": self.settings.cassandra.port,
            "cassandra storage": self.settings.runtime.cassandra_storage_port,
        }

    def address(self) -> str:
        return f"cql://{self.settings.cassandra.hosts[0]}:{self.settings.cassandra.port}"

    def prepare(self) -> list[str]:
        runtime = self.settings.runtime
        java = find_java()
        deploy = self.settings.deploy_dir / "cassandra"
        libs = resolve_jars(
            deploy / "pom.xml",
            runtime.home / "lib" / f"cassandra-{runtime.cassandra_version}",
            {"cassandra.version": runtime.cassandra_version},
            self.home / "maven.log",
        )
        data = self.home / "data"
        config = _render(
            deploy / "cassandra.yaml",
            self.home / "cassandra.yaml",
            data_dir=data,
            native_port=self.settings.cassandra.port,
            storage_port=runtime.cassandra_storage_port,
            authenticator="PasswordAuthenticator" if runtime.cassandra_auth else "AllowAllAuthenticator",
            authorizer="CassandraAuthorizer" if runtime.cassandra_auth else "AllowAllAuthorizer",
        )
        options = [
            line.strip()
            for line in (deploy / "jvm17.options").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        jamm = next(libs.glob("jamm-*.jar"), None)
        heap = runtime.cassandra_heap
        return [
            str(java), f"-Xms{heap}", f"-Xmx{heap}", *options,
            *([f"-javaagent:{jamm}"] if jamm else []),
            f"-Dcassandra.config=file://{config}",
            f"-Dcassandra.storagedir={data}",
            f"-Dcassandra.logdir={self.home / 'logs'}",
            f"-Dlogback.configurationFile=file://{deploy / 'logback.xml'}",
            "-cp", f"{libs}/*", "org.apache.cassandra.service.CassandraDaemon",
        ]  # fmt: skip

    def healthy(self) -> bool:
        return cql_ready(self.settings.cassandra)


class Prometheus(Service):
    def ports(self) -> dict[str, int]:
        return {"prometheus": self.settings.runtime.prometheus_port}

    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.runtime.prometheus_port}"

    @property
    def targets_dir(self) -> Path:
        return self.home / "targets"

    def prepare(self) -> list[str]:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise RuntimeServiceError(
                "Prometheus not found: install Debian's `prometheus` package (`make deps` does)"
            )
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        port = self.settings.runtime.prometheus_port
        config = _render(
            self.settings.deploy_dir / "prometheus" / "prometheus.yml",
            self.home / "prometheus.yml",
            targets_dir=self.targets_dir,
            port=port,
            rules_dir=self.settings.deploy_dir / "prometheus" / "rules",
        )
        return [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=2d",
        ]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address()}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (URLError, OSError):
            return False


SERVICES: dict[str, type[Service]] = {
    "kafka": Kafka,
    "cassandra": Cassandra,
    "prometheus": Prometheus,
}
