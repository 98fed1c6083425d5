"""A local EK CA made with swtpm's own certificate tooling, and TPMs manufactured with it.

``swtpm_setup --create-ek-cert`` runs ``swtpm_localca``, which on first use creates a root
CA and an intermediate ("swtpm-localca") in the CA directory and then issues the EK
certificate into the TPM's NV index 0x01c00002, as a TPM maker does in the factory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SETUP_TOOLS = ("swtpm_setup", "swtpm_localca")


@dataclass(frozen=True)
class EkCa:
    directory: Path

    @property
    def bundle(self) -> Path:
        """root + intermediate, PEM: what a lab puts in the gateway's EK CA bundle."""
        out = self.directory / "bundle.pem"
        if not out.exists():
            out.write_bytes((self.directory / "swtpm-localca-rootca-cert.pem").read_bytes()
                            + (self.directory / "issuercert.pem").read_bytes())
        return out


def make_ca(directory: Path) -> EkCa:
    directory = directory.resolve()
    (directory / "ca").mkdir(parents=True, exist_ok=True)
    ca = directory / "ca"
    (directory / "localca.conf").write_text(
        f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
        f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n")
    (directory / "localca.options").write_text(
        "--platform-manufacturer auditbox-test\n--platform-version 2.1\n"
        "--platform-model QEMU\n")
    (directory / "setup.conf").write_text(
        "create_certs_tool = /usr/bin/swtpm_localca\n"
        f"create_certs_tool_config = {directory}/localca.conf\n"
        f"create_certs_tool_options = {directory}/localca.options\n"
        "active_pcr_banks = sha1,sha256\n")
    made = EkCa(ca)
    manufacture(directory / "first-tpm", made)       # swtpm_localca creates the CA on first use
    return made


def manufacture(state: Path, ca: EkCa) -> None:
    """A TPM state in ``state`` with an RSA EK (0x81010001) and its certificate in NV."""
    state.mkdir(parents=True, exist_ok=True)
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state.resolve()),
                    "--create-ek-cert", "--config", str(ca.directory.parent / "setup.conf"),
                    "--overwrite"], check=True, capture_output=True)
