"""OpenLDAP (Debian's slapd) with a small directory, and its user federation on the realm (STACK_LDAP=1).

slapd runs unprivileged (as `nobody` when the stack runs as root) from a slapd.conf in the state folder, on
127.0.0.1 only; the tree (keycloak-spi-config/ldap/people.ldif) is loaded once with slapadd. The directory
manager's password is random, made once and kept in the state folder (`ldap/admin-password`, mode 600); slapd's
config holds only its salted hash. Once slapd answers and Keycloak runs, the realm gets (or keeps) an LDAP user
federation named `ldap` (keycloak-spi-config/ldap/ldap-federation.json), set up through the admin API as an
operator would: vendor other (OpenLDAP), import on, edit mode READ_ONLY, periodic changed-users sync every
STACK_LDAP_CHANGED_SYNC_S seconds (default 60; -1 turns it off).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .common import (
    HOST,
    ROOT,
    SECRETS,
    STATE,
    Service,
    StackError,
    as_unprivileged,
    log,
    run,
    unprivileged_home,
    wait_for,
)
from .keycloak import REALM
from .keycloak_admin import admin, admin_token

LDAP_PORT = int(os.environ.get("STACK_LDAP_PORT", "3389"))
LDAP = Service("ldap", (LDAP_PORT,))
LDAP_URL = f"ldap://{HOST}:{LDAP_PORT}"
BASE_DN = "dc=example,dc=org"
USERS_DN = f"ou=people,{BASE_DN}"
ADMIN_DN = f"cn=admin,{BASE_DN}"
CHANGED_SYNC_S = int(os.environ.get("STACK_LDAP_CHANGED_SYNC_S", "60"))
LDAP_DIR = ROOT / "keycloak-spi-config" / "ldap"
FEDERATION_FILE = LDAP_DIR / "ldap-federation.json"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def ldap_home() -> Path:
    return STATE / "ldap"


def password_file() -> Path:
    return ldap_home() / "admin-password"


def tool(name: str) -> str:
    """A slapd / ldap-utils program; they come from Debian (scripts/tools/install.sh installs them)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise StackError(
            f"{name} not found: STACK_LDAP=1 needs Debian's slapd and ldap-utils (scripts/tools/install.sh)"
        )
    return found


def admin_password() -> str:
    """The directory manager's password: random, made once per state folder, never printed."""
    path = password_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))  # no newline: ldap tools read the file whole (-y)
    password = path.read_text()
    SECRETS.add(password)
    return password


def slapd_conf(home: Path) -> str:
    hashed = run([tool("slappasswd"), "-T", str(password_file())]).stdout.strip()
    return "\n".join(
        [
            *(f"include /etc/ldap/schema/{schema}.schema" for schema in SCHEMAS),
            f"pidfile {home / 'slapd.pid'}",
            f"argsfile {home / 'slapd.args'}",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            "database mdb",
            f"suffix {BASE_DN}",
            f"rootdn {ADMIN_DN}",
            f"rootpw {hashed}",
            f"directory {home / 'data'}",
            "maxsize 104857600",
            "index objectClass eq",
            "index uid eq",
            # Everyone may read (the realm's federation binds as the manager anyway); only the manager writes.
            "access to * by * read",
            "",
        ]
    )


def prepare_directory() -> Path:
    home = unprivileged_home(ldap_home())
    admin_password()
    config = home / "slapd.conf"
    if not config.exists():
        config.write_text(slapd_conf(home))
    data = unprivileged_home(home / "data")
    if not (data / "data.mdb").exists():
        log(f"loading the directory tree into {data}")
        run(as_unprivileged([tool("slapadd"), "-f", str(config), "-l", str(LDAP_DIR / "people.ldif")]))
    return home


def ldap_ready() -> bool:
    probe = [tool("ldapsearch"), "-x", "-H", LDAP_URL, "-b", BASE_DN, "-s", "base", "dn"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def federation_config() -> dict[str, Any]:
    component: dict[str, Any] = json.loads(FEDERATION_FILE.read_text())
    component["config"] |= {
        "connectionUrl": [LDAP_URL],
        "bindDn": [ADMIN_DN],
        "bindCredential": [admin_password()],
        "usersDn": [USERS_DN],
        "changedSyncPeriod": [str(CHANGED_SYNC_S)],
    }
    return component


def ensure_federation() -> str:
    """The realm's LDAP federation: created once, its connection and sync settings kept current; its id."""
    token = admin_token()
    _, _, realm = admin("GET", f"/{REALM}", token=token)
    component = federation_config() | {"parentId": realm["id"]}
    query = f"/{REALM}/components?type=org.keycloak.storage.UserStorageProvider&name={component['name']}"
    _, _, existing = admin("GET", query, token=token)
    if existing:
        component_id = str(existing[0]["id"])
        admin("PUT", f"/{REALM}/components/{component_id}", component | {"id": component_id}, token=token)
    else:
        _, headers, _ = admin("POST", f"/{REALM}/components", component, token=token)
        component_id = headers["Location"].rsplit("/", 1)[1]
    first_name_from_given_name(component_id, token)
    (ldap_home() / "keycloak-component-id").write_text(component_id)
    return component_id


def first_name_from_given_name(component_id: str, token: str) -> None:
    """Keycloak's default "first name" mapper for vendor `other` reads `cn` (the full name); inetOrgPerson
    has `givenName` for it, which is what operators map."""
    query = (
        f"/{REALM}/components?parent={component_id}&type=org.keycloak.storage.ldap.mappers.LDAPStorageMapper"
    )
    _, _, mappers = admin("GET", query, token=token)
    for mapper in mappers:
        if mapper["name"] == "first name" and mapper["config"].get("ldap.attribute") != ["givenName"]:
            mapper["config"]["ldap.attribute"] = ["givenName"]
            admin("PUT", f"/{REALM}/components/{mapper['id']}", mapper, token=token)


def start_ldap() -> None:
    home = prepare_directory()
    LDAP.spawn(
        # -d 0: stay in the foreground (the stack's pid file names slapd itself) and log nothing extra.
        as_unprivileged([tool("slapd"), "-d", "0", "-h", f"{LDAP_URL}/", "-f", str(home / "slapd.conf")]),
        cwd=home,
    )
    wait_for(f"slapd on {LDAP_URL}", ldap_ready, 30, LDAP)
    component_id = ensure_federation()
    log(f"OpenLDAP ready on {LDAP_URL} ({USERS_DN}); realm {REALM} federates it (component {component_id})")


def ldap_env() -> dict[str, str]:
    component = ldap_home() / "keycloak-component-id"
    return {
        "LDAP_URL": LDAP_URL,
        "LDAP_BASE_DN": BASE_DN,
        "LDAP_USERS_DN": USERS_DN,
        "LDAP_BIND_DN": ADMIN_DN,
        "LDAP_BIND_PASSWORD_FILE": str(password_file()),
        "KEYCLOAK_LDAP_COMPONENT_ID": component.read_text() if component.exists() else "",
    }
