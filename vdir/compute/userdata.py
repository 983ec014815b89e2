"""Cloud-init user data for a VM booted near some data.

The VM, on first boot:

1. installs vdir into ``/opt/vdir`` (a virtualenv; the pip requirement is ``compute.install``,
   default ``vdir[mongo,s3,fuse]``) with FUSE 3 from the distribution (dnf or apt);
2. writes ``/etc/vdir/config.yaml`` naming the *same catalog* as the machine that booted it;
3. mounts the whole namespace read-only at ``/vdir`` (``compute.mountpoint``) through a systemd
   unit, so it comes back after a reboot;
4. exports ``VDIR_CONFIG``, ``VDIR_VM`` and ``VDIR_NEAR`` to login shells.

No secret is ever written into user data (anyone who can describe the instance can read it).
Backends on the VM use the SDKs' own credential chains, i.e. the instance role
(``compute.aws.instance_profile``).  A catalog URL holding a password is refused; store it in
SSM Parameter Store as a SecureString and name the parameter (``compute.aws.catalog_parameter``):
the VM reads it at boot with its instance role and keeps it in a root-only file.

A user's own ``--user-data FILE`` is added as a second part of a MIME multipart message, which
cloud-init runs after vdir's part (shell scripts and ``#cloud-config`` both work).
"""

from __future__ import annotations

import re
import shlex
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from urllib.parse import parse_qsl, urlsplit

import yaml

from vdir.errors import ConfigError

DEFAULT_INSTALL = "vdir[mongo,s3,fuse]"
CLOUD_INSTALL = {"aws": DEFAULT_INSTALL, "azure": "vdir[mongo,azure,fuse]", "gcp": "vdir[mongo,gcs,fuse]"}
"""What a VM of each cloud installs unless ``compute.install`` says otherwise: its own storage SDK."""
DEFAULT_MOUNTPOINT = "/vdir"
CONFIG_PATH = "/etc/vdir/config.yaml"
SECRET_QUERY = re.compile(r"(password|secret|token|sas|sig|key)", re.I)


def url_secret(url: str) -> str | None:
    """What in a catalog URL is secret (a password, a token in the query), or ``None``."""
    parts = urlsplit(url)
    if parts.password:
        return "a password"
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_QUERY.search(key):
            return f"the query option {key!r}"
    return None


def redact(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    return re.sub(r"^([a-z+]+://)([^@/]*?):([^@/]*)@", r"\1\2:***@", url)


def local_host(url: str) -> str | None:
    """The host if the catalog URL names this machine only (a VM elsewhere cannot reach it)."""
    if url.startswith("sqlite:"):
        return "an embedded SQLite file"
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    for host in hosts.split(","):
        name = host[1:].split("]")[0] if host.startswith("[") else host.split(":")[0]
        if name in ("localhost", "127.0.0.1", "::1") or name.startswith("127."):
            return name
    return None


def _setup_script(*, name: str, near: list[str], region: str, install: str, mountpoint: str,
                  catalog_parameter: str | None) -> str:
    q = shlex.quote
    fetch = ""
    if catalog_parameter:
        fetch = f"""
# the catalog URL holds a secret: read it from SSM Parameter Store with the instance role
mkdir -p /etc/vdir
umask 077
/opt/vdir/bin/python - {q(catalog_parameter)} {q(region)} <<'PY'
import sys, boto3, yaml
url = boto3.client("ssm", region_name=sys.argv[2]).get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"]
with open("{CONFIG_PATH}", "w") as f:
    yaml.safe_dump({{"catalog": url}}, f)
PY
chmod 0600 {CONFIG_PATH}
umask 022
"""
    return f"""#!/bin/sh
# written by vdir for VM {name}: install vdir, point it at the catalog, mount read-only
set -eu
if command -v dnf >/dev/null 2>&1; then
    dnf install -y python3 python3-pip fuse3 fuse3-libs || dnf install -y python3 python3-pip fuse
elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q python3 python3-venv python3-pip fuse3
fi
python3 -m venv /opt/vdir
/opt/vdir/bin/pip install --quiet --upgrade pip
/opt/vdir/bin/pip install --quiet {q(install)}
ln -sf /opt/vdir/bin/vdir /usr/local/bin/vdir
{fetch}
mkdir -p {q(mountpoint)}
systemctl daemon-reload
systemctl enable --now vdir-mount.service
"""


def build(
    *,
    name: str,
    catalog_url: str,
    near: list[str],
    region: str,
    install: str = DEFAULT_INSTALL,
    mountpoint: str = DEFAULT_MOUNTPOINT,
    catalog_parameter: str | None = None,
    cloud: str = "aws",
    extra: str | None = None,
) -> str:
    """The user data for VM ``name`` (see the module docstring).

    ``ConfigError`` when the catalog URL holds a secret and no ``catalog_parameter`` names where
    the VM can fetch it instead."""
    secret = url_secret(catalog_url)
    if secret and not catalog_parameter:
        raise ConfigError(
            f"the catalog URL {redact(catalog_url)} holds {secret}, which must not go into user data; "
            + ("store the URL in SSM Parameter Store and set compute.aws.catalog_parameter" if cloud == "aws" else
               f"on {cloud} use a catalog the VM's own identity may read (no password in the URL)")
        )
    files: list[dict[str, str]] = []
    if not catalog_parameter:
        files.append({"path": CONFIG_PATH, "permissions": "0644", "content": yaml.safe_dump({"catalog": catalog_url})})
    files.append({"path": "/usr/local/sbin/vdir-vm-setup", "permissions": "0755",
                  "content": _setup_script(name=name, near=near, region=region, install=install,
                                           mountpoint=mountpoint, catalog_parameter=catalog_parameter)})
    files.append({"path": "/etc/systemd/system/vdir-mount.service", "permissions": "0644", "content": (
        "[Unit]\nDescription=vdir namespace, read-only\nAfter=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart=/opt/vdir/bin/vdir --config {CONFIG_PATH} mount --foreground --read-only --allow-other {mountpoint}\n"
        f"ExecStop=/bin/fusermount3 -u {mountpoint}\nRestart=on-failure\nRestartSec=5\n\n"
        "[Install]\nWantedBy=multi-user.target\n")})
    files.append({"path": "/etc/profile.d/vdir.sh", "permissions": "0644", "content": (
        f"export VDIR_CONFIG={CONFIG_PATH}\nexport VDIR_VM={shlex.quote(name)}\n"
        f"export VDIR_NEAR={shlex.quote(' '.join(near))}\nexport VDIR_MOUNT={shlex.quote(mountpoint)}\n")})
    doc = {"write_files": files, "runcmd": [["/usr/local/sbin/vdir-vm-setup"]]}
    ours = "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    if not extra:
        return ours
    message = MIMEMultipart()
    message.attach(MIMEText(ours, "cloud-config", "utf-8"))
    message.attach(MIMEText(extra, _subtype_of(extra), "utf-8"))
    return message.as_string()


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the user data reads like the files it writes."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _subtype_of(text: str) -> str:
    head = text.lstrip()[:64]
    if head.startswith("#cloud-config"):
        return "cloud-config"
    if head.startswith("#include"):
        return "x-include-url"
    if head.startswith("#cloud-boothook"):
        return "cloud-boothook"
    return "x-shellscript"
