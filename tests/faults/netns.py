"""A network namespace joined to the host by a veth pair, whose link a test cuts and
restores (the cluster partition scenario). Needs root and iproute2 (`ip`)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field


@dataclass
class NetNamespace:
    """A network namespace joined to the host by a veth pair on a private /30: the host
    side has `host_address`, the namespace `address`. Needs root and iproute2."""

    name: str = field(default_factory=lambda: f"batchd-{secrets.token_hex(3)}")
    subnet: int = field(default_factory=lambda: secrets.randbelow(250) + 1)

    @property
    def host_dev(self) -> str:
        return f"{self.name[7:]}h"

    @property
    def address(self) -> str:
        return f"10.213.{self.subnet}.2"

    @property
    def host_address(self) -> str:
        return f"10.213.{self.subnet}.1"

    @property
    def network(self) -> str:
        return f"10.213.{self.subnet}.0/30"

    @property
    def prefix(self) -> list[str]:
        """Runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        inner = f"{self.name[7:]}n"
        ip("netns", "add", self.name)
        ip("link", "add", self.host_dev, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", self.name)
        ip("addr", "add", f"{self.host_address}/30", "dev", self.host_dev)
        ip("link", "set", self.host_dev, "up")
        ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", inner)
        ip("-n", self.name, "link", "set", inner, "up")
        ip("-n", self.name, "link", "set", "lo", "up")

    def cut(self) -> None:
        ip("link", "set", self.host_dev, "down")

    def restore(self) -> None:
        ip("link", "set", self.host_dev, "up")

    def delete(self) -> None:
        # Deleting the namespace deletes its end of the pair, and with it the host's.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, check=False)


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
