"""A real, throw-away Kubernetes control plane for tests (envtest-style).

Starts etcd, kube-apiserver and kube-controller-manager (optionally kube-scheduler)
as local processes on 127.0.0.1, on free ports, in a private temp dir, with a
generated CA, an admin client certificate (O=system:masters) and a kubeconfig.
No kubelet and no nodes: Pods are never run, but the API server, admission,
RBAC, the garbage collector and the Deployment/ReplicaSet/Namespace/ServiceAccount
controllers are the real ones.

Binaries come from ``$CODER_TOOLS_BIN`` if set, otherwise from
``tools/build-k8s.sh`` (cached Go build; its last stdout line is the bin dir).

Usage::

    from tests.support.kube import ControlPlane

    with ControlPlane() as cp:
        subprocess.run([cp.kubectl, "get", "ns"], env=cp.env(), check=True)

or, in pytest, ``pytest_plugins = ["tests.support.kube"]`` in the root conftest
(or ``from tests.support.kube import kube_control_plane`` in a conftest) and
request the session-scoped ``kube_control_plane`` fixture.

Only the standard library, PyYAML and ``cryptography`` are used.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as _dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_CONTROLLERS",
    "ControlPlane",
    "ControlPlaneError",
    "find_bin_dir",
    "kube_control_plane",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-k8s.sh"

#: v1.36 canonical controller names (the pre-1.28 aliases garbagecollector,
#: deployment, replicaset, namespace, serviceaccount, serviceaccount-token
#: are still accepted by kube-controller-manager v1.36).
DEFAULT_CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

_LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane (or one of its processes) failed to start."""


# --------------------------------------------------------------------------- binaries


def find_bin_dir(build_timeout: float = 3 * 3600) -> Path:
    """Directory holding etcd, kube-apiserver, ... .

    ``$CODER_TOOLS_BIN`` if set (must already contain the binaries), else the last
    stdout line of ``tools/build-k8s.sh`` (which builds on first use: about 6-12
    minutes on a cold 2-core machine, well under a second when cached).
    """
    env_dir = os.environ.get("CODER_TOOLS_BIN")
    if env_dir:
        bin_dir = Path(env_dir)
        source = "$CODER_TOOLS_BIN"
    else:
        if not BUILD_SCRIPT.exists():
            raise ControlPlaneError(f"{BUILD_SCRIPT} not found and $CODER_TOOLS_BIN is not set")
        # stderr (build progress) is inherited, stdout is captured.
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=build_timeout,
            cwd=str(REPO_ROOT),
        )
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines:
            raise ControlPlaneError(
                f"{BUILD_SCRIPT} failed (exit {proc.returncode}); stdout:\n{proc.stdout[-2000:]}"
            )
        bin_dir = Path(lines[-1])
        source = str(BUILD_SCRIPT)
    missing = [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"{bin_dir} (from {source}) lacks {', '.join(missing)}; "
            f"run `CODER_TOOLS_BIN={bin_dir} {BUILD_SCRIPT}`"
        )
    return bin_dir


# --------------------------------------------------------------------------- helpers


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((_LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def _tail(path: Path, lines: int = 60) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # If the Python process dies without running stop() (SIGKILL, crash), the
    # kernel kills the children too. Linux-only; silently skipped elsewhere.
    # (The signal fires when the *thread* that started the process exits: start
    # the control plane from a long-lived thread, as pytest fixtures are.)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


class _Proc:
    def __init__(self, name: str, popen: subprocess.Popen, log: Path):
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback.

    Attributes once started: ``bin_dir``, ``tmpdir``, ``kubeconfig`` (path),
    ``server`` (https URL), ``ports`` (dict), ``ca_cert``/``admin_cert``/``admin_key``
    (paths), ``kubectl``/``helm`` (binary paths), ``pids`` (name -> pid).
    """

    def __init__(
        self,
        bin_dir: os.PathLike | None = None,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        scheduler: bool = False,
        service_cluster_ip_range: str = "10.0.0.0/24",
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        keep_tmpdir: bool | None = None,
    ):
        self._bin_dir_arg = Path(bin_dir) if bin_dir else None
        self.controllers = tuple(controllers)
        self.with_scheduler = scheduler
        self.service_cluster_ip_range = service_cluster_ip_range
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        if keep_tmpdir is None:
            keep_tmpdir = os.environ.get("CODER_KUBE_KEEP_TMPDIR", "") not in ("", "0")
        self.keep_tmpdir = keep_tmpdir

        self.bin_dir: Path | None = None
        self.tmpdir: Path | None = None
        self.kubeconfig: Path | None = None
        self.server: str | None = None
        self.ports: dict[str, int] = {}
        self.ca_cert: Path | None = None
        self.admin_cert: Path | None = None
        self.admin_key: Path | None = None
        self._server_ca: Path | None = None
        self._procs: list[_Proc] = []
        self._lock = threading.Lock()

    # ---- public API

    @property
    def started(self) -> bool:
        return bool(self._procs) and all(p.popen.poll() is None for p in self._procs)

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self._procs}

    @property
    def kubectl(self) -> str:
        return str(self._need_bin_dir() / "kubectl")

    @property
    def helm(self) -> str:
        return str(self._need_bin_dir() / "helm")

    def env(self) -> dict[str, str]:
        """``os.environ`` plus KUBECONFIG, PATH (bin_dir first) and private HELM_* dirs."""
        if self.kubeconfig is None or self.tmpdir is None:
            raise ControlPlaneError("control plane not started")
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self._need_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
        for var, sub in (
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ):
            env[var] = str(self.tmpdir / sub)
        return env

    def run_kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this control plane; returns the CompletedProcess (text)."""
        proc = subprocess.run(
            [self.kubectl, *args],
            env=self.env(),
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def start(self) -> ControlPlane:
        with self._lock:
            if self._procs:
                raise ControlPlaneError("already started")
            self.bin_dir = self._bin_dir_arg or find_bin_dir()
            for attempt in range(3):
                self.tmpdir = Path(tempfile.mkdtemp(prefix="kube-cp-"))
                try:
                    self._start()
                    break
                except ControlPlaneError as exc:
                    self._stop_locked()
                    # A free port picked here can be taken by someone else before the
                    # process binds it: retry on fresh ports.
                    if attempt < 2 and "address already in use" in str(exc):
                        continue
                    raise
                except BaseException:
                    self._stop_locked()
                    raise
        return self

    def stop(self) -> None:
        """SIGTERM every started process (reverse order), SIGKILL after stop_timeout,
        then remove the temp dir. Idempotent."""
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the contract
        with contextlib.suppress(Exception):
            if self._procs:
                self._stop_locked()

    # ---- start-up

    def _need_bin_dir(self) -> Path:
        if self.bin_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.bin_dir

    def _start(self) -> None:
        t = self.tmpdir
        assert t is not None
        taken: set[int] = set()
        p = self.ports = {
            "etcd_client": _free_port(taken),
            "etcd_peer": _free_port(taken),
            "apiserver": _free_port(taken),
            "controller_manager": _free_port(taken),
        }
        if self.with_scheduler:
            p["scheduler"] = _free_port(taken)
        pki = t / "pki"
        pki.mkdir()
        self._make_pki(pki)

        # etcd
        etcd_url = f"http://{_LOOPBACK}:{p['etcd_client']}"
        peer_url = f"http://{_LOOPBACK}:{p['etcd_peer']}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={t / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, lambda: self._http_ok(f"{etcd_url}/health", b'"health":"true"'), "etcd /health")

        # kube-apiserver (self-signed serving cert written into --cert-dir)
        self.server = f"https://{_LOOPBACK}:{p['apiserver']}"
        cert_dir = t / "apiserver-certs"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={cert_dir}",
                f"--secure-port={p['apiserver']}",
                f"--bind-address={_LOOPBACK}",
                f"--advertise-address={_LOOPBACK}",
                f"--service-cluster-ip-range={self.service_cluster_ip_range}",
                "--authorization-mode=RBAC",
                f"--client-ca-file={self.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",
                # The 'kubernetes' Endpoints may not hold a loopback IP; don't reconcile it.
                "--endpoint-reconciler-type=none",
                *self.extra_apiserver_args,
            ],
        )
        serving_cert = cert_dir / "apiserver.crt"
        self._wait(
            apiserver,
            lambda: serving_cert.is_file() and serving_cert.stat().st_size > 0,
            "kube-apiserver serving certificate",
        )
        self._server_ca = serving_cert  # self-signed chain (serving cert + its CA)
        self._wait(apiserver, lambda: self._https_ok(f"{self.server}/readyz"), "kube-apiserver /readyz")

        self.kubeconfig = self._write_kubeconfig(t / "kubeconfig")

        # kube-controller-manager
        kcm = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                # Trust our CA directly instead of looking up (and endlessly retrying)
                # the requestheader CA that this apiserver does not configure.
                f"--client-ca-file={self.ca_cert}",
                "--authentication-skip-lookup=true",
                "--leader-elect=false",
                f"--bind-address={_LOOPBACK}",
                f"--secure-port={p['controller_manager']}",
                f"--cert-dir={t / 'controller-manager-certs'}",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=false",
                *self.extra_controller_manager_args,
            ],
        )
        self._wait(
            kcm,
            lambda: self._https_ok(f"https://{_LOOPBACK}:{p['controller_manager']}/healthz", verify=False),
            "kube-controller-manager /healthz",
        )

        if self.with_scheduler:
            sched = self._spawn(
                "kube-scheduler",
                [
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    f"--client-ca-file={self.ca_cert}",
                    "--authentication-skip-lookup=true",
                    "--leader-elect=false",
                    f"--bind-address={_LOOPBACK}",
                    f"--secure-port={p['scheduler']}",
                ],
            )
            self._wait(
                sched,
                lambda: self._https_ok(f"https://{_LOOPBACK}:{p['scheduler']}/healthz", verify=False),
                "kube-scheduler /healthz",
            )

    def _make_pki(self, pki: Path) -> None:
        now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)
        later = now + _dt.timedelta(days=7)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-control-plane-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "test-admin"),
                    ]
                )
            )
            .issuer_name(ca_name)
            .public_key(admin_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        self.ca_cert = _write(pki / "ca.crt", _pem_cert(ca), 0o644)
        _write(pki / "ca.key", _pem_key(ca_key))
        self.admin_cert = _write(pki / "admin.crt", _pem_cert(admin), 0o644)
        self.admin_key = _write(pki / "admin.key", _pem_key(admin_key))
        _write(pki / "sa.key", _pem_key(sa_key))
        _write(
            pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )

    def _write_kubeconfig(self, path: Path) -> Path:
        def b64(p: Path | None) -> str:
            assert p is not None
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self._server_ca),
                    },
                }
            ],
            "users": [
                {
                    "name": "test-admin",
                    "user": {
                        "client-certificate-data": b64(self.admin_cert),
                        "client-key-data": b64(self.admin_key),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test-admin"}}],
            "current-context": "test",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        log = self.tmpdir / f"{name}.log"  # type: ignore[operator]
        exe = str(self._need_bin_dir() / name)
        with open(log, "ab") as fh:
            fh.write(f"$ {exe} {' '.join(args)}\n".encode())
            fh.flush()
            popen = subprocess.Popen(
                [exe, *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=str(self.tmpdir),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _wait(self, proc: _Proc, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            rc = proc.popen.poll()
            if rc is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {rc} while waiting for {what}; "
                    f"tail of {proc.log}:\n{_tail(proc.log)}"
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for {what}; "
                    f"tail of {proc.log}:\n{_tail(proc.log)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    @staticmethod
    def _http_ok(url: str, expect: bytes = b"") -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (http://127.0.0.1 only)
            return r.status == 200 and expect in r.read()

    def _https_ok(self, url: str, verify: bool = True) -> bool:
        if verify:
            ctx = ssl.create_default_context(cafile=str(self._server_ca))
        else:  # controller-manager/scheduler serve self-signed certs of their own
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as r:  # noqa: S310 (https only)
                return r.status == 200 and r.read().strip() == b"ok"
        except urllib.error.HTTPError:
            return False

    # ---- shutdown

    def _stop_locked(self) -> None:
        procs, self._procs = self._procs, []
        for proc in reversed(procs):  # dependants first, etcd last
            self._terminate(proc)
        if self.tmpdir is not None and not self.keep_tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _terminate(self, proc: _Proc) -> None:
        # Each process leads its own session/process group (start_new_session), so
        # signal the group while the leader is alive: the pgid is then certainly ours.
        popen = proc.popen

        def signal_group(sig: int) -> None:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, sig)

        signal_group(signal.SIGTERM)
        try:
            popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            popen.wait(timeout=30)


# --------------------------------------------------------------------------- pytest

# One control plane per test session, shared even if the fixture is registered more
# than once: via pytest_plugins and by import into a test module, or under both of
# this project's module names (coder.tests.support.kube and tests.support.kube), in
# which case this file is imported twice; hence the state lives in sys.modules.
_SESSION_STATE_KEY = "_coder_tests_support_kube_session"


def _session_state() -> dict[str, Any]:
    holder = sys.modules.setdefault(_SESSION_STATE_KEY, types.ModuleType(_SESSION_STATE_KEY))
    state: dict[str, Any] = vars(holder).setdefault("state", {"cp": None, "refs": 0})
    return state


@contextlib.contextmanager
def _session_control_plane() -> Iterator[ControlPlane]:
    state = _session_state()
    if state["cp"] is None:
        state["cp"] = ControlPlane().start()
    state["refs"] += 1
    try:
        yield state["cp"]
    finally:
        state["refs"] -= 1
        if state["refs"] == 0 and state["cp"] is not None:
            cp, state["cp"] = state["cp"], None
            cp.stop()


try:
    import pytest
except ImportError:  # pragma: no cover - ControlPlane itself does not need pytest
    pass
else:

    @pytest.fixture(scope="session")
    def kube_control_plane() -> Iterator[ControlPlane]:
        """A started ControlPlane shared by the whole test session."""
        with _session_control_plane() as cp:
            yield cp
