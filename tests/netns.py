"""Machines on one machine: network namespaces (`ip netns`), each with a veth pair to this
one and an address of its own, and TCP relays that carry a namespace's connections to the
servers here (PostgreSQL, Redis and the loopback fakes listen on 127.0.0.1 only).

The relays of one host listen on this side's address of that host's link, so taking the
link down (`Host.cut`) cuts that host off from everything it reached through it, while the
others go on.
"""

import os
import select
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field


def unavailable() -> str:
    """Return why namespaces cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need the ip command (iproute2)"
    probe = f"studio-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def ip(*args: str, namespace: str = "") -> None:
    command = ["ip", "netns", "exec", namespace, "ip", *args] if namespace else ["ip", *args]
    subprocess.run(command, check=True, capture_output=True)


class Relay:
    """Accept on (host, port) and carry each connection to 127.0.0.1:target, both ways."""

    def __init__(self, host: str, target: int):
        self.target = target
        self.connections = 0
        self.server = socket.create_server((host, 0))
        self.address = self.server.getsockname()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        ends = [a, b]
        try:
            while True:
                ready, _, _ = select.select(ends, [], [], 1)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def stop(self) -> None:
        self.stopped = True
        self.server.close()


@dataclass
class Host:
    """A namespace with a veth link to this machine: `outside` is this side's address (where
    its relays listen), `inside` the host's own."""

    name: str
    link: str
    outside: str
    inside: str
    relays: dict[str, Relay] = field(default_factory=dict)

    def relay(self, label: str, target: int, *, own_address: str = "") -> Relay:
        """Relay this host's connections to 127.0.0.1:target; return the relay (its
        address is what the host connects to). With own_address (this side's, in the
        link's /24), the relay listens there, so `cut_relay` can cut it alone."""
        if own_address:
            ip("addr", "add", f"{own_address}/32", "dev", self.link)
        self.relays[label] = Relay(own_address or self.outside, target)
        return self.relays[label]

    def spare_address(self, number: int) -> str:
        """Return another address on this side of the link (number 3 to 254)."""
        return self.outside.rsplit(".", 1)[0] + f".{number}"

    def cut_relay(self, label: str) -> None:
        """Cut this host off from one relay on its own address, silently, as a broken link
        would: the host's frames to it go to a hardware address no one has, so its new
        connections get no answer and its open ones hang (nothing is refused)."""
        ip(
            "neigh", "replace", self.relays[label].address[0], "lladdr", "02:00:00:00:00:01",
            "dev", f"{self.link}p", "nud", "permanent", namespace=self.name,
        )  # fmt: skip

    def mend_relay(self, label: str) -> None:
        ip(
            "neigh",
            "del",
            self.relays[label].address[0],
            "dev",
            f"{self.link}p",
            namespace=self.name,
        )

    def command(self, *args: str) -> list[str]:
        """Return a command that runs inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def cut(self) -> None:
        """Take the host's link down: its packets go nowhere, its connections hang."""
        ip("link", "set", self.link, "down")

    def mend(self) -> None:
        ip("link", "set", self.link, "up")


class Network:
    """Hosts made on demand, each on a /30 of its own; `remove` undoes everything."""

    def __init__(self):
        # Sessions side by side (pytest-xdist) each get their own names and subnets.
        self.tag = f"{os.getpid() % 100000}"
        self.subnet = 100 + os.getpid() % 100
        self.hosts: list[Host] = []

    def host(self, label: str) -> Host:
        index = len(self.hosts) + 1
        name, link = f"st{self.tag}{label}", f"st{self.tag}v{index}"
        outside, inside = f"10.{self.subnet}.{index}.1", f"10.{self.subnet}.{index}.2"
        ip("netns", "add", name)
        host = Host(name, link, outside, inside)
        self.hosts.append(host)
        ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
        ip("link", "set", f"{link}p", "netns", name)
        ip("addr", "add", f"{outside}/24", "dev", link)
        ip("link", "set", link, "up")
        ip("addr", "add", f"{inside}/24", "dev", f"{link}p", namespace=name)
        ip("link", "set", f"{link}p", "up", namespace=name)
        ip("link", "set", "lo", "up", namespace=name)
        return host

    def remove(self) -> None:
        for host in self.hosts:
            for relay in host.relays.values():
                relay.stop()
            subprocess.run(["ip", "link", "del", host.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        self.hosts.clear()
