"""A private Docker daemon, a Debian base image made with debootstrap, and the five images: for tests/images.

Everything lives under one temporary directory (data root, exec root, pid file, socket, rootfs, build context)
that is removed at the end; the daemon runs with --bridge=none --iptables=false --ip6tables=false, builds and
containers use the host's network only (the services talk to 127.0.0.1). Nothing is pulled from a registry:
the base comes from this machine's own apt sources (read at run time from /etc/apt), the Python wheels are
the lock's (requirements/*.lock, hashes checked) downloaded by the host's pip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, missing_prerequisite

BASE_TAG = "pgtd-base:debootstrap"
IMAGE_REPO = "pg-trickle-demo"
# image: (Dockerfile target, --build-arg SERVICE/PORT or None)
IMAGES = {
    "bootstrap": ("bootstrap", None),
    "generator": ("service", 8000),
    "dashboard": ("service", 8080),
    "exporter": ("service", 9188),
    "operator": ("operator", None),
}
# The chart's container securityContext and /tmp emptyDir, as docker run options (helm/.../_helpers.tpl).
CHART_LIKE = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,size=64m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "10001:10001",
    "--network",
    "host",
]


def prerequisites() -> dict[str, str]:
    """dockerd, its client and debootstrap, as root; skips (fails under CI=true) naming what is missing."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (to start a private dockerd and run debootstrap)")
    found = {}
    for tool, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap")):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if path is None:
            missing.append(f"{tool} (Debian package {package})")
        else:
            found[tool] = path
    if "dockerd" in found:
        # The client shipped with the daemon (Debian's docker.io): a newer client elsewhere on PATH may want buildx.
        beside = Path(found["dockerd"]).resolve().parent.parent / "bin" / "docker"
        client = str(beside) if beside.exists() else shutil.which("docker")
        if client is None:
            missing.append("docker (the client; Debian package docker.io)")
        else:
            found["docker"] = client
    if missing:
        missing_prerequisite("make test-images needs " + ", ".join(missing) + " (.ci/apt-packages lists them)")
    return found


def apt_mirror(codename: str, etc_apt: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI this machine's apt uses for `codename` (deb822 .sources or one-line .list)."""
    candidates: list[tuple[str, list[str]]] = []
    sources = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in sources:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    candidates.append((parts[1], [parts[2]]))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                for uri in fields.get("uris", "").split():
                    candidates.append((uri, fields.get("suites", "").split()))
    for uri, suites in candidates:
        if codename in suites:
            return uri.rstrip("/")
    raise LookupError(f"no deb source for suite {codename!r} in {etc_apt} (sources.list, sources.list.d)")


def os_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise LookupError(f"no VERSION_CODENAME in {os_release}")


@dataclass
class Docker:
    """A private dockerd under `root` and its client."""

    client: str
    dockerd: str
    debootstrap: str
    root: Path
    timings: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        return {**keep, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0", "HOME": str(self.root), **extra}

    def run(self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None, **env: str):
        result = subprocess.run(
            [self.client, *args], env=self.env(**env), capture_output=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])}... exited {result.returncode}:\n{result.stderr.decode()[-4000:]}"
            )
        return result

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.dockerd,
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'dockerd.pid'}",
                f"--host={self.host}",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.run("version", check=False, timeout=30).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("dockerd did not start:\n" + (self.root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.5)

    def stop(self) -> None:
        """Removes every container, stops the daemon (its containerd with it), whatever state it is in."""
        if self.process is None:
            return
        if self.process.poll() is None:
            listing = self.run("ps", "-aq", check=False, timeout=60)
            ids = listing.stdout.decode().split()
            if ids:
                self.run("rm", "-f", *ids, check=False, timeout=120)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None

    def remove(self) -> None:
        """Deletes the temporary directory, after unmounting what the daemon left mounted in it (exec-root's
        network namespace, overlays of a daemon that was killed)."""
        prefix = str(self.root) + "/"
        with open("/proc/self/mounts") as mounts:
            targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- images -----------------------------------------------------------------------------------------------
    def build_base(self) -> None:
        """Debian minbase + python3 + python3-venv with debootstrap from this machine's apt mirror, imported."""
        codename = os_codename()
        mirror = apt_mirror(codename)
        rootfs = self.root / "rootfs"
        started = time.monotonic()
        result = subprocess.run(
            [self.debootstrap, "--variant=minbase", "--include=python3,python3-venv", codename, str(rootfs), mirror],
            capture_output=True,
            timeout=1500,
        )
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{result.stdout.decode()[-3000:]}{result.stderr.decode()}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                         "usr/share/locale", "usr/share/info"):  # fmt: skip
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
        (rootfs / "var/lib/apt/lists").mkdir(parents=True, exist_ok=True)
        self.timings["debootstrap"] = time.monotonic() - started
        started = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [self.client, "import", "-", BASE_TAG], stdin=tar.stdout, env=self.env(), capture_output=True, timeout=600
        )
        tar.stdout.close()
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise AssertionError(f"docker import failed: {imported.stderr.decode()}")
        shutil.rmtree(rootfs, ignore_errors=True)
        self.timings["import"] = time.monotonic() - started

    def base_python(self) -> str:
        out = self.run("run", "--rm", "--network", "host", BASE_TAG, "python3", "-c",
                       "import sys; print('%d.%d' % sys.version_info[:2])")  # fmt: skip
        return out.stdout.decode().strip()

    def context(self) -> Path:
        """The build context: what .dockerignore lets in (requirements, services, sql), plus the lock's wheels
        downloaded by this machine's pip when its Python matches the base's (the build then installs offline)."""
        ctx = self.root / "context"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "wheels")
        for name in ("requirements", "services", "sql"):
            shutil.copytree(ROOT / name, ctx / name, ignore=ignore)
        if self.base_python() == "{}.{}".format(*sys.version_info[:2]):
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--require-hashes",
                    "--only-binary=:all:",
                    "-d",
                    str(ctx / "requirements" / "wheels"),
                    "-r",
                    str(ROOT / "requirements" / "services.lock"),
                    "-r",
                    str(ROOT / "requirements" / "operator.lock"),
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
            self.timings["wheels"] = time.monotonic() - started
        return ctx

    def build(self, name: str, context: Path, *, buildkit: bool = False, tag: str | None = None) -> float:
        target, port = IMAGES[name]
        args = ["build", "--network", "host", "-f", str(ROOT / "services" / "Dockerfile"), "--target", target]
        args += ["--build-arg", f"BASE_IMAGE={BASE_TAG}", "-t", tag or image(name)]
        if port is not None:
            args += ["--build-arg", f"SERVICE={name}", "--build-arg", f"PORT={port}"]
        started = time.monotonic()
        self.run(*args, str(context), timeout=1200, DOCKER_BUILDKIT="1" if buildkit else "0")
        return time.monotonic() - started

    def inspect(self, what: str) -> dict:
        return json.loads(self.run("inspect", what).stdout)[0]


def image(name: str) -> str:
    return f"{IMAGE_REPO}/{name}:test"


def private_docker() -> Docker:
    tools = prerequisites()
    root = Path(tempfile.mkdtemp(prefix="pgtd-img-", dir="/tmp"))  # short: the socket path has a length limit
    return Docker(client=tools["docker"], dockerd=tools["dockerd"], debootstrap=tools["debootstrap"], root=root)
