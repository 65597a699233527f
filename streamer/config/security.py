"""Kafka SASL/SSL settings (``KafkaSecurity``, built by ``Settings.from_env``), and the
redaction of secrets in URLs; the Redis password and CA file are ``settings.redis`` fields.

Secrets come from the environment only, never logged: ``redact`` masks them in anything
printed, and ``Settings`` keeps them out of its repr.

| variable | meaning |
|---|---|
| ``KAFKA_SECURITY_PROTOCOL`` | PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL |
| ``KAFKA_SASL_MECHANISM`` | PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512 |
| ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD`` | SASL credentials |
| ``KAFKA_SSL_CA_FILE`` / ``KAFKA_SSL_CERT_FILE`` / ``KAFKA_SSL_KEY_FILE`` | TLS files |
| ``REDIS_PASSWORD`` | Redis password, if not in ``REDIS_URL`` |
| ``REDIS_SSL_CA_FILE`` | CA for ``rediss://`` URLs |

>>> redact("redis://:s3cret@redis:6379/0")
'redis://:***@redis:6379/0'
>>> redact("redis://user:pw@host/0")
'redis://user:***@host/0'
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

import faust

__all__ = ["MECHANISMS", "PROTOCOLS", "KafkaSecurity", "redact"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """The ``KAFKA_*`` variables of ``env`` (``Settings.from_env`` passes its own)."""
        sec = cls(
            protocol=env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=env.get("KAFKA_SASL_MECHANISM", "PLAIN").upper(),
            sasl_username=env.get("KAFKA_SASL_USERNAME", ""),
            sasl_password=env.get("KAFKA_SASL_PASSWORD", ""),
            ssl_ca_file=env.get("KAFKA_SSL_CA_FILE", ""),
            ssl_cert_file=env.get("KAFKA_SSL_CERT_FILE", ""),
            ssl_key_file=env.get("KAFKA_SSL_KEY_FILE", ""),
        )
        if sec.protocol not in PROTOCOLS:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
        if sec.sasl_mechanism not in MECHANISMS:
            raise ValueError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}")
        if sec.protocol.startswith("SASL") and not (sec.sasl_username and sec.sasl_password):
            raise ValueError(f"{sec.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return sec

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=self.ssl_ca_file or None)
        if self.ssl_cert_file:
            context.load_cert_chain(self.ssl_cert_file, self.ssl_key_file or None)
        return context

    def faust_credentials(self) -> faust.types.auth.CredentialsT | None:
        """What Faust's ``broker_credentials`` takes, or None for plaintext."""
        if self.protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return None

    def confluent(self) -> dict[str, str]:
        """librdkafka settings for confluent-kafka producers, consumers and admin clients."""
        conf = {"security.protocol": self.protocol.lower()}
        if self.protocol.startswith("SASL"):
            conf.update(
                {
                    "sasl.mechanisms": self.sasl_mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password,
                }
            )
        if self.protocol.endswith("SSL"):
            for key, value in (
                ("ssl.ca.location", self.ssl_ca_file),
                ("ssl.certificate.location", self.ssl_cert_file),
                ("ssl.key.location", self.ssl_key_file),
            ):
                if value:
                    conf[key] = value
        return conf


_USERINFO = re.compile(r"(?P<scheme>[a-z]+://)(?P<user>[^:@/]*):(?P<secret>[^@/]+)@")


def redact(url: str) -> str:
    """A URL with its password masked, safe to print."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
