"""Boot an image under QEMU (TCG, q35, OVMF, swtpm); used by `auditbox run` and the tests.

KVM hangs on this machine kind, so TCG always. swtpm gets absolute paths and one
instance per boot. Whatever happens, stop() leaves no QEMU or swtpm behind.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError, InputError

OVMF_DIRS = (Path("/usr/share/OVMF"),)
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_CODE_SECBOOT = "OVMF_CODE_4M.secboot.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"


@dataclass
class VMConfig:
    image: Path
    memory_mb: int = 2048
    cpus: int = 2
    tpm: bool = True
    snapshot: bool = True                       # never write to the image itself
    serials: list[str] = field(default_factory=lambda: ["stdio"])  # "stdio", socket path, "null"
    qmp: Path | None = None
    network: bool = True
    hostfwd: list[str] = field(default_factory=list)   # e.g. "tcp:127.0.0.1:2222-:22"
    # guest -> host relays, e.g. "tcp:10.0.2.2:2222-cmd:socat - TCP:127.0.0.1:40123"
    guestfwd: list[str] = field(default_factory=list)
    net_host: str | None = None                 # user-net's address for the host (10.0.2.2)
    secure_boot: bool = False
    vars_file: Path | None = None               # OVMF varstore to start from (copied)
    extra_args: list[str] = field(default_factory=list)
    # a disk of this many bytes holding the image (a temporary qcow2 overlay): free space
    # after the image, as on a laptop, where systemd-repart makes the state partition
    disk_bytes: int | None = None
    tpm_state: Path | None = None               # keep the TPM here across runs (re-flash)


def ovmf_file(name: str) -> Path:
    for d in OVMF_DIRS:
        if (d / name).exists():
            return d / name
    raise BuildError(f"OVMF firmware {name} not found (install the ovmf package)")


def _chardev_args(index: int, spec: str) -> list[str]:
    cid = f"ser{index}"
    if spec == "stdio":
        dev = f"stdio,id={cid},signal=on"
    elif spec == "null":
        dev = f"null,id={cid}"
    else:
        dev = f"socket,id={cid},path={Path(spec).resolve()},server=on,wait=off"
    return ["-chardev", dev, "-serial", f"chardev:{cid}"]


class QemuVM:
    def __init__(self, config: VMConfig, log_path: Path | None = None) -> None:
        if not config.image.exists():
            raise InputError("image not found", file=config.image, key="IMAGE")
        self.config = config
        self.state = Path(tempfile.mkdtemp(prefix="auditbox-vm-")).resolve()
        self.log_path = log_path or self.state / "qemu.log"
        self.qemu: subprocess.Popen[bytes] | None = None
        self.swtpm: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        c = self.config
        code = ovmf_file(OVMF_CODE_SECBOOT if c.secure_boot else OVMF_CODE)
        vars_copy = self.state / "OVMF_VARS.fd"
        shutil.copyfile(c.vars_file or ovmf_file(OVMF_VARS), vars_copy)
        machine = "q35,smm=on" if c.secure_boot else "q35"
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine,
                "-smp", str(c.cpus), "-m", str(c.memory_mb), "-nodefaults", "-display", "none",
                "-no-user-config",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                "-drive", self._drive(),
                "-device", "virtio-rng-pci"]
        if c.secure_boot:
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        for i, spec in enumerate(c.serials):
            argv += _chardev_args(i, spec)
        if c.qmp:
            argv += ["-qmp", f"unix:{c.qmp.resolve()},server=on,wait=off"]
        if c.network:
            opts = [f"host={c.net_host}"] if c.net_host else []
            opts += [f"hostfwd={f}" for f in c.hostfwd]
            opts += [f"guestfwd={f}" for f in c.guestfwd]
            netdev = ",".join(["user", "id=net0", *(o.replace(",", ",,") for o in opts)])
            argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
        if c.tpm:
            sock = self.state / "swtpm.sock"
            argv += ["-chardev", f"socket,id=chrtpm,path={sock}",
                     "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                     "-device", "tpm-tis,tpmdev=tpm0"]
        return argv + c.extra_args

    def _format(self) -> str:
        return "qcow2" if self.config.image.suffix == ".qcow2" else "raw"

    def _drive(self) -> str:
        c = self.config
        if c.disk_bytes is None:
            return (f"if=virtio,format={self._format()},file={c.image.resolve()}"
                    + (",snapshot=on" if c.snapshot else ""))
        overlay = self.state / "disk.qcow2"
        if not overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self._format(),
                            "-b", str(c.image.resolve()), str(overlay), str(c.disk_bytes)],
                           check=True)
        return f"if=virtio,format=qcow2,file={overlay}"

    def _start_swtpm(self) -> None:
        tpmstate = (self.config.tpm_state or self.state / "tpm").resolve()
        tpmstate.mkdir(parents=True, exist_ok=True)
        sock = self.state / "swtpm.sock"
        self.swtpm = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tpmstate}",
             "--ctrl", f"type=unixio,path={sock}", "--log", f"file={self.state / 'swtpm.log'}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.swtpm.poll() is not None or time.monotonic() > deadline:
                raise BuildError("swtpm did not start (see swtpm.log)")
            time.sleep(0.05)

    def start(self, foreground: bool = False) -> None:
        if self.config.tpm:
            self._start_swtpm()
        argv = self.argv()
        with self.log_path.open("ab") as logf:
            logf.write(("$ " + " ".join(argv) + "\n").encode())
        stdio = "stdio" in self.config.serials
        self.qemu = subprocess.Popen(
            argv, stdin=None if stdio else subprocess.DEVNULL,
            stdout=None if stdio else self.log_path.open("ab"),
            stderr=None if foreground else self.log_path.open("ab"))

    def wait(self) -> int:
        assert self.qemu is not None
        return self.qemu.wait()

    def running(self) -> bool:
        return self.qemu is not None and self.qemu.poll() is None

    def stop(self, timeout: float = 10) -> None:
        for proc in (self.qemu, self.swtpm):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> QemuVM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_foreground(config: VMConfig) -> int:
    """`auditbox run`: console on stdio; guest power-off, Ctrl-C, SIGTERM or SIGHUP stops
    QEMU and swtpm. Returns QEMU's exit code, or 128 + the number of the stop signal.

    The handlers are installed explicitly: a job started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python's default SIGTERM would
    exit without stopping the VM. A handler only records the signal and asks QEMU to
    quit, so a signal that lands while the processes are being started leaves none
    behind: the normal path then stops them.
    """
    vm = QemuVM(config)
    stop_signal = 0

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_signal
        stop_signal = stop_signal or signum
        if vm.qemu is not None and vm.qemu.returncode is None:
            vm.qemu.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        vm.start(foreground=True)
        if not stop_signal:         # a signal during start: vm.stop() below ends the VM
            code = vm.wait()
        return 128 + stop_signal if stop_signal else code
    finally:
        vm.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
