"""INTENTFLOW_KAFKA__* (TLS and SASL) reach every Kafka client of the stream side: the Faust worker
(broker_credentials) and each confluent-kafka producer, consumer and admin client. No TLS broker is
needed: the clients' configurations are checked where they are built."""

import json
import os
import ssl
import subprocess
import sys
from unittest.mock import MagicMock

import certifi
import pytest

from tests.kafka_util import ROOT

SECURE = {"INTENTFLOW_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "INTENTFLOW_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
          "INTENTFLOW_KAFKA__SASL_USERNAME": "stream", "INTENTFLOW_KAFKA__SASL_PASSWORD": "s3cret",
          "INTENTFLOW_KAFKA__SSL_CA_LOCATION": certifi.where()}
WANT = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "stream",
        "sasl.password": "s3cret", "ssl.ca.location": certifi.where()}


@pytest.fixture
def secure_env(settings_for):
    return settings_for("broker.example:9093", **SECURE)


@pytest.fixture
def clients(monkeypatch):
    """Every confluent-kafka client class, wherever the stream side imports it, replaced by a recorder."""
    import confluent_kafka
    import confluent_kafka.admin

    import infra.kafka_compat
    import infra.topics
    import streams.producer
    import streams.status

    made: list[tuple[str, dict]] = []

    def recorder(kind):
        def make(conf, *args, **kwargs):
            made.append((kind, dict(conf)))
            m = MagicMock()
            m.consume.return_value = []
            m.flush.return_value = 0
            m.committed.return_value = []
            m.list_topics.return_value.topics = {"t": MagicMock(partitions={})}
            return m
        return make

    for mod, names in ((confluent_kafka, ("Producer", "Consumer")), (confluent_kafka.admin, ("AdminClient",)),
                       (streams.producer, ("Producer",)), (infra.topics, ("Consumer", "AdminClient")),
                       (infra.kafka_compat, ("Consumer",)), (streams.status, ("Consumer",))):
        for n in names:
            monkeypatch.setattr(mod, n, recorder(n))
    return made


def _secured(made: list[tuple[str, dict]]) -> list[str]:
    assert made
    for kind, conf in made:
        assert {k: conf.get(k) for k in WANT} == WANT, (kind, conf)
    return [k for k, _ in made]


def test_settings_read_the_one_security_model(secure_env):
    from generators.config import KafkaSecurity, MLSettings

    assert isinstance(secure_env.kafka, KafkaSecurity)
    assert secure_env.kafka == MLSettings().kafka  # both sides read the same variables into the same model
    assert secure_env.kafka.librdkafka() == WANT


def test_every_confluent_client_of_the_stream_side_gets_the_options(secure_env, clients, monkeypatch):
    from infra import kafka_compat, services, topics
    from streams import status
    from streams.producer import EventProducer

    b = secure_env.broker
    EventProducer(secure_env)
    assert _secured(clients) == ["Producer"]

    clients.clear()
    services.ensure_topics(b, ["t"], 1)
    services.broker_healthy(b)
    topics.existing(b, ["t"])
    kafka_compat.end_offsets(b, ["t"])
    kafka_compat.true_end_offsets(b, {("t", 0): 5}, timeout=0.1)
    assert _secured(clients) == ["AdminClient", "AdminClient", "AdminClient", "Consumer", "Consumer"]

    clients.clear()
    monkeypatch.setattr(topics, "existing", lambda *a, **k: ["t"])
    monkeypatch.setattr(topics, "end_offsets", lambda *a, **k: {("t", 0): 3})
    monkeypatch.setattr(status, "existing", lambda *a, **k: ["t"])
    monkeypatch.setattr(status, "end_offsets", lambda *a, **k: {("t", 0): 3})
    topics.read_json(b, "t", timeout=0.1)
    status.committed(b, "intentflow", ["t"])
    assert _secured(clients) == ["Consumer", "Consumer"]


def test_the_dlq_replay_command_gets_the_options(secure_env, clients, monkeypatch):
    from click.testing import CliRunner

    import infra.kafka_compat
    from streams.cli import main

    import infra.topics

    monkeypatch.setattr(infra.kafka_compat, "end_offsets", lambda *a, **k: {("behavior.dlq", 0): 1})
    asked: list = []  # the topic check and the read of the letters' history get the security settings too
    monkeypatch.setattr(infra.topics, "existing", lambda b, topics, security=None: asked.append(security) or list(topics))
    monkeypatch.setattr(infra.topics, "read_records", lambda b, topic, security=None, **k: asked.append(security) or [])
    r = CliRunner().invoke(main, ["dlq", "replay", "behavior.dlq", "--json"])
    assert r.exit_code == 0, r.output
    assert _secured(clients) == ["Consumer", "Producer"]
    assert len(asked) == 2 and all(a.security_protocol == "SASL_SSL" for a in asked)


def test_faust_credentials_carry_the_same_options():
    from faust.auth import SASLCredentials, SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from generators.config import KafkaSecurity
    from streams.settings import faust_credentials

    assert faust_credentials(KafkaSecurity()) is None  # plaintext, as on loopback
    sasl = faust_credentials(KafkaSecurity(**{k.split("__")[1].lower(): v for k, v in SECURE.items()}))
    assert isinstance(sasl, SASLCredentials)
    auth = credentials_to_aiokafka_auth(sasl)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"],
            auth["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "stream", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext) and auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert auth["ssl_context"].get_ca_certs()  # the CA file was loaded
    tls = faust_credentials(KafkaSecurity(security_protocol="SSL", ssl_ca_location=certifi.where()))
    assert isinstance(tls, SSLCredentials) and credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"
    with pytest.raises(ValueError, match="SECURITY_PROTOCOL"):
        faust_credentials(KafkaSecurity(security_protocol="TLS"))
    with pytest.raises(ValueError, match="OAUTHBEARER"):
        faust_credentials(KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER"))


def test_the_stream_worker_app_is_built_with_them():
    """The worker's Faust app, as `intentflow worker` builds it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env.update(SECURE, INTENTFLOW_BROKER="broker.example:9093", INTENTFLOW_FEATURES__ENABLED="false")
    code = ("import json; from streams.app import app; from faust.transport.drivers.aiokafka import "
            "credentials_to_aiokafka_auth as a; c = a(app.conf.broker_credentials); "
            "print(json.dumps({k: v for k, v in c.items() if k != 'ssl_context'} | {'tls': c['ssl_context'] is not None}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert got == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "stream",
                   "sasl_plain_password": "s3cret", "tls": True}
