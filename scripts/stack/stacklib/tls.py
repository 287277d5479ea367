"""TLS and SASL material of a secure stack (STACK_SECURE=1): a test CA, one server certificate, SCRAM users."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

from .common import HOST, SECRETS, TLS_DIR, StackError, log, run

SASL_MECHANISM = "SCRAM-SHA-512"
# The SCRAM users of a secure stack: the broker (inter-broker traffic and the topic tool), the listener, us.
KAFKA_USERS = ("broker", "keycloak", "reconciler")


def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise StackError("STACK_SECURE=1 needs the openssl command (apt-get install openssl)")
    run(["openssl", *args])


def ensure_tls() -> None:
    """A test CA and one server certificate for 127.0.0.1/localhost, made once per state folder."""
    if (TLS_DIR / ".complete").exists():
        return
    log(f"making a test CA and a server certificate in {TLS_DIR}")
    shutil.rmtree(TLS_DIR, ignore_errors=True)
    TLS_DIR.mkdir(parents=True)
    TLS_DIR.chmod(0o700)
    ca_key, ca, key, csr, cert = (
        TLS_DIR / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    days = "825"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        days,
        "-subj",
        "/CN=keycloak-user-reconciler test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={HOST}"
    )
    extensions = TLS_DIR / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{HOST},DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        days,
        "-extfile",
        str(extensions),
    )
    # Kafka's PEM keystore: the (PKCS#8, unencrypted) key and the certificate chain in one file.
    (TLS_DIR / "server-keystore.pem").write_text(key.read_text() + cert.read_text())
    ca_key.unlink()  # nothing else is ever signed with it
    for path in TLS_DIR.iterdir():
        path.chmod(0o600)
    (TLS_DIR / ".complete").touch()


def kafka_passwords() -> dict[str, str]:
    """The SCRAM users' passwords, random, made once per state folder (never printed)."""
    path = TLS_DIR / "kafka-users.json"
    if not path.exists():
        TLS_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({user: secrets.token_urlsafe(24) for user in KAFKA_USERS}))
        path.chmod(0o600)
    passwords: dict[str, str] = json.loads(path.read_text())
    SECRETS.update(passwords.values())
    return passwords


def jaas(user: str) -> str:
    password = kafka_passwords()[user]
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def kafka_client_properties() -> Path:
    """The topic tool's client settings on a secure stack (the broker's own SCRAM user)."""
    path = TLS_DIR / "kafka-client.properties"
    path.write_text(
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                f"sasl.mechanism={SASL_MECHANISM}",
                f"sasl.jaas.config={jaas('broker')}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={TLS_DIR / 'ca.pem'}",
                "",
            ]
        )
    )
    path.chmod(0o600)
    return path
