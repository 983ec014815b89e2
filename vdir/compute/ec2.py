"""Amazon EC2 as a compute provider: the only module that calls EC2 (boto3).

Before anything is created, :meth:`EC2Provider.check` asks EC2 whether the instance type, the
image, the key pair, the security group and the subnet exist in the chosen region, so a typo
fails with one line (``instance type 't9.huge' does not exist in eu-west-1``) and leaves nothing
behind.  :meth:`EC2Provider.boot` then makes one ``RunInstances`` call for the whole request
(``--count N`` is all or nothing) with an idempotency token, tags every instance ``Name``,
``vdir:vm`` (its vdir name) and ``vdir:near`` (the paths it was placed for), and terminates
what it started if tagging fails.

Images: an ``ami-...`` id is used as given; an alias (``al2023``, ``ubuntu-24.04``...) or a name
pattern (``my-image-*``) is resolved in the chosen region to the newest matching image, since
AMI ids differ per region.

Every botocore exception becomes a vdir error in :meth:`EC2Provider._translate`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectTimeoutError as BotoConnectTimeout,
)

from vdir.compute.base import GONE, VM, Provider, SSHCommand, Status, VMSpec
from vdir.errors import (
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    NotFound,
    TransientError,
    VDirError,
)

T = TypeVar("T")

USER_DATA_LIMIT = 16 * 1024
"""EC2 refuses user data longer than 16 KiB (before base64)."""

AMAZON = "amazon"
CANONICAL = "099720109477"
IMAGE_ALIASES: dict[str, tuple[str, str, str]] = {
    # alias: (owner, name pattern, ssh login)
    "al2023": (AMAZON, "al2023-ami-2023.*-x86_64", "ec2-user"),
    "amazon-linux-2023": (AMAZON, "al2023-ami-2023.*-x86_64", "ec2-user"),
    "al2023-arm64": (AMAZON, "al2023-ami-2023.*-arm64", "ec2-user"),
    "amazon-linux-2": (AMAZON, "amzn2-ami-hvm-2.0.*-x86_64-gp2", "ec2-user"),
    "ubuntu-22.04": (CANONICAL, "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*", "ubuntu"),
    "ubuntu-24.04": (CANONICAL, "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*", "ubuntu"),
}
DEFAULT_IMAGE = "al2023"
DEFAULT_FLAVOR = "t3.micro"

_AUTH = {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch", "OptInRequired",
         "Blocked", "ExpiredToken", "RequestExpired", "UnrecognizedClientException", "AccessDenied"}
_TRANSIENT = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "InsufficientInstanceCapacity",
              "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure", "ServerInternal"}


def login_for(image_name: str) -> str:
    """The usual ssh login of an image, from its name."""
    low = image_name.lower()
    for word, user in (("ubuntu", "ubuntu"), ("debian", "admin"), ("centos", "centos"), ("fedora", "fedora"),
                       ("rocky", "rocky"), ("suse", "ec2-user")):
        if word in low:
            return user
    return "ec2-user"


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class EC2Provider(Provider):
    name = "ec2"
    cloud = "aws"
    remote = True

    def __init__(
        self,
        *,
        profile: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.profile = profile
        self.endpoint_url = endpoint_url
        self._config = Config(retries={"mode": "standard", "total_max_attempts": max(1, int(max_attempts))},
                              connect_timeout=connect_timeout, read_timeout=read_timeout, user_agent_extra="vdir")
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    # -- plumbing -----------------------------------------------------------------------------
    def client(self, region: str) -> Any:
        """The EC2 client of ``region`` (made once)."""
        found = self._clients.get(region)
        if found is not None:
            return found
        try:
            if self._session is None:
                self._session = boto3.session.Session(profile_name=self.profile)
            made = self._session.client("ec2", region_name=region, endpoint_url=self.endpoint_url, config=self._config)
        except ProfileNotFound as exc:
            raise ConfigError(f"AWS profile {self.profile!r} (compute.aws.profile) is not configured on this machine") from exc
        except (BotoCoreError, ValueError) as exc:
            raise self._translate(exc, region, "open EC2") from exc
        self._clients[region] = made
        return made

    def _call(self, region: str, what: str, fn: Callable[[Any], T], spec: VMSpec | None = None) -> T:
        try:
            return fn(self.client(region))
        except VDirError:
            raise
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, region, what, spec) from exc

    def _translate(self, exc: BaseException, region: str, what: str, spec: VMSpec | None = None) -> VDirError:
        """The one place EC2 SDK exceptions become vdir errors (one line each)."""
        where = f"ec2 {region}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = _one_line(str(error.get("Message", "")))
            flavor = spec.flavor if spec else None
            image = spec.image if spec else None
            if code.startswith("InvalidInstanceType") or (code == "InvalidParameterValue" and "instance type" in message.lower()):
                return InvalidArgument(f"instance type {flavor!r} does not exist in {region} "
                                       "(try t3.micro or m6i.large; see 'aws ec2 describe-instance-types')")
            if code.startswith("InvalidAMIID"):
                return InvalidArgument(f"image {image!r} does not exist in {region} (AMI ids differ per region: "
                                       f"use an AMI of {region} or an alias such as {DEFAULT_IMAGE})")
            if code == "InvalidKeyPair.NotFound":
                key = spec.key if spec else None
                return NotFound(f"key pair {key!r} does not exist in {region}; import it there "
                                f"('aws ec2 import-key-pair --region {region} --key-name {key} ...') or choose another with --key")
            if code in ("InvalidGroup.NotFound", "InvalidSecurityGroupID.NotFound"):
                return NotFound(f"security group {spec.security_group if spec else ''!r} does not exist in {region}")
            if code == "InvalidSubnetID.NotFound":
                return NotFound(f"subnet {spec.subnet if spec else ''!r} does not exist in {region}")
            if code.startswith("InvalidInstanceID"):
                return NotFound(f"{where}: {what}: no such instance")
            if code in _AUTH:
                return AuthenticationError(f"{where}: {what}: AWS refused the credentials or permission ({code}: {message})")
            if code in _TRANSIENT or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                return TransientError(f"{where}: {what}: {code}: {message} (try again later)")
            if code.startswith("Invalid") or code in ("MissingParameter", "UnsupportedOperation", "Unsupported"):
                return InvalidArgument(f"{where}: {what}: {code}: {message}")
            return VDirError(f"{where}: {what}: {code}: {message}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AuthenticationError("no AWS credentials found for EC2 (set AWS_PROFILE or compute.aws.profile, "
                                       "or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables)")
        if isinstance(exc, (EndpointConnectionError, BotoConnectTimeout)):
            return BackendUnavailable(f"{where}: {what}: cannot reach EC2{' at ' + self.endpoint_url if self.endpoint_url else ''}")
        if isinstance(exc, ParamValidationError):
            return InvalidArgument(f"{where}: {what}: {_one_line(str(exc))}")
        return VDirError(f"{where}: {what}: {_one_line(str(exc))}")

    # -- validation ---------------------------------------------------------------------------
    def resolve_image(self, region: str, image: str, spec: VMSpec | None = None) -> tuple[str, str]:
        """(AMI id, image name) for an id, alias or name pattern in ``region``."""
        if image.startswith("ami-"):
            found = self._call(region, "describe image", lambda c: c.describe_images(ImageIds=[image])["Images"], spec)
            if not found:
                raise InvalidArgument(f"image {image!r} does not exist in {region}")
            return image, str(found[0].get("Name") or "")
        owner, pattern, _ = IMAGE_ALIASES.get(image, ("", image, ""))
        owners = [owner] if owner else ["self", AMAZON]
        filters = [{"Name": "name", "Values": [pattern]}, {"Name": "state", "Values": ["available"]}]
        images = self._call(region, f"find image {image}",
                            lambda c: c.describe_images(Owners=owners, Filters=filters)["Images"], spec)
        if not images:
            known = ", ".join(sorted(IMAGE_ALIASES))
            raise InvalidArgument(f"no image matches {image!r} in {region} (give an ami-... id, a name pattern, or one of: {known})")
        newest = max(images, key=lambda i: (str(i.get("CreationDate") or ""), str(i.get("Name") or "")))
        return str(newest["ImageId"]), str(newest.get("Name") or "")

    def check(self, spec: VMSpec) -> VMSpec:
        region = spec.region
        if not spec.flavor:
            raise InvalidArgument("no instance type: pass --flavor or set compute.aws.flavor")
        flavor = spec.flavor
        self._call(region, f"check instance type {flavor}",
                   lambda c: c.describe_instance_types(InstanceTypes=[flavor]), spec)
        image_id, image_name = self.resolve_image(region, spec.image or DEFAULT_IMAGE, spec)
        ssh_user = spec.ssh_user or IMAGE_ALIASES.get(spec.image or DEFAULT_IMAGE, ("", "", ""))[2] or login_for(image_name)
        if spec.key:
            key = spec.key
            self._call(region, f"check key pair {key}", lambda c: c.describe_key_pairs(KeyNames=[key]), spec)
        if spec.subnet:
            subnet = spec.subnet
            self._call(region, f"check subnet {subnet}", lambda c: c.describe_subnets(SubnetIds=[subnet]), spec)
        group = spec.security_group
        if group and not group.startswith("sg-"):
            group = self._group_id(region, group, spec)
        elif group:
            gid = group
            self._call(region, f"check security group {gid}", lambda c: c.describe_security_groups(GroupIds=[gid]), spec)
        if spec.user_data and len(spec.user_data.encode()) > USER_DATA_LIMIT:
            raise InvalidArgument(f"user data is {len(spec.user_data.encode())} bytes; EC2 takes at most {USER_DATA_LIMIT}")
        return replace(spec, image=image_id, security_group=group, ssh_user=ssh_user)

    def _group_id(self, region: str, name: str, spec: VMSpec) -> str:
        filters = [{"Name": "group-name", "Values": [name]}]
        if spec.subnet:
            subnet = spec.subnet
            vpc = self._call(region, "describe subnet", lambda c: c.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"], spec)
            filters.append({"Name": "vpc-id", "Values": [vpc]})
        groups = self._call(region, f"find security group {name}",
                            lambda c: c.describe_security_groups(Filters=filters)["SecurityGroups"], spec)
        if not groups:
            raise NotFound(f"security group {name!r} does not exist in {region}")
        if len(groups) > 1:
            ids = ", ".join(g["GroupId"] for g in groups)
            raise InvalidArgument(f"security group name {name!r} is ambiguous in {region} ({ids}); give its sg- id")
        return str(groups[0]["GroupId"])

    # -- lifecycle ----------------------------------------------------------------------------
    def boot(self, specs: list[VMSpec]) -> list[Status]:
        if not specs:
            return []
        first = specs[0]
        region = first.region
        common = {k: v for k, v in first.tags.items()}
        tags = dict(common)
        if len(specs) == 1:
            tags.update({"Name": first.name, "vdir:vm": first.name})
        args: dict[str, Any] = {
            "ImageId": first.image, "InstanceType": first.flavor, "MinCount": len(specs), "MaxCount": len(specs),
            "ClientToken": uuid.uuid4().hex,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v[:256]} for k, v in tags.items()]}],
        }
        if first.key:
            args["KeyName"] = first.key
        if first.user_data:
            args["UserData"] = first.user_data
        if first.subnet:
            args["SubnetId"] = first.subnet
        if first.security_group:
            args["SecurityGroupIds"] = [first.security_group]
        if first.instance_profile:
            ip = first.instance_profile
            args["IamInstanceProfile"] = {"Arn": ip} if ip.startswith("arn:") else {"Name": ip}
        answer = self._call(region, "run instances", lambda c: c.run_instances(**args), first)
        instances = answer.get("Instances", [])
        ids = [i["InstanceId"] for i in instances]
        try:
            if len(specs) > 1:
                for spec, iid in zip(specs, ids, strict=True):
                    self._name_instance(region, iid, spec)
        except BaseException:
            self._terminate(region, ids)
            raise
        return [self._status(i) for i in instances]

    def _name_instance(self, region: str, instance_id: str, spec: VMSpec) -> None:
        named = [{"Key": "Name", "Value": spec.name}, {"Key": "vdir:vm", "Value": spec.name}]
        self._call(region, f"tag {instance_id}", lambda c: c.create_tags(Resources=[instance_id], Tags=named), spec)

    def _terminate(self, region: str, ids: list[str]) -> None:
        if ids:
            try:
                self._call(region, "terminate instances", lambda c: c.terminate_instances(InstanceIds=ids))
            except NotFound:
                pass

    @staticmethod
    def _status(instance: dict[str, Any]) -> Status:
        placement = instance.get("Placement") or {}
        extra = {"zone": placement.get("AvailabilityZone")} if placement.get("AvailabilityZone") else {}
        return Status(state=str(instance.get("State", {}).get("Name", "unknown")), instance_id=instance.get("InstanceId"),
                      public_ip=instance.get("PublicIpAddress"), private_ip=instance.get("PrivateIpAddress"), extra=extra)

    def status(self, vm: VM) -> Status:
        if not vm.instance_id:
            found = self.find(vm)
            return found if found is not None else Status(state=GONE)
        iid = vm.instance_id
        try:
            answer = self._call(vm.region, f"describe {iid}", lambda c: c.describe_instances(InstanceIds=[iid]))
        except NotFound:
            return Status(state=GONE)
        for reservation in answer.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return self._status(instance)
        return Status(state=GONE)

    def find(self, vm: VM) -> Status | None:
        filters = [{"Name": "tag:vdir:vm", "Values": [vm.name]},
                   {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        answer = self._call(vm.region, f"find {vm.name}", lambda c: c.describe_instances(Filters=filters))
        for reservation in answer.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return self._status(instance)
        return None

    def delete(self, vm: VM) -> None:
        iid = vm.instance_id
        if not iid:
            found = self.find(vm)
            iid = found.instance_id if found else None
        if iid:
            self._terminate(vm.region, [iid])

    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        return SSHCommand.to_vm(vm, command, "ec2-user")

    def logs(self, vm: VM) -> str:
        if not vm.instance_id:
            return ""
        iid = vm.instance_id
        answer = self._call(vm.region, f"console output of {iid}", lambda c: c.get_console_output(InstanceId=iid))
        return str(answer.get("Output") or "")
