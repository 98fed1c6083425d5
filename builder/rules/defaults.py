"""The default profile's rule selection (every control of CONTROLS.md), in CONTROLS order."""

from __future__ import annotations

DEFAULT_SELECTION: tuple[str, ...] = (
    # kernel command line
    "kernel-alloc-hardening", "kernel-legacy-off", "kernel-infoleak-off",
    "kernel-dma-isolation", "kernel-lockdown", "initrd-no-shell", "usb-default-deny",
    "display-external-off", "console-quiet",
    # sysctl
    "sysctl-kptr", "sysctl-sysrq-off", "sysctl-bpf-kexec", "sysctl-ptrace", "sysctl-tty",
    "sysctl-attack-surface", "sysctl-fs", "sysctl-panic", "sysctl-net", "modules-locked",
    # peripherals
    "usb-storage-absent", "usb-net-absent", "usb-serial-absent", "usbguard-policy",
    "usbguard-dbus-off",
    "dma-ports-off", "radio-off", "camera-audio-off", "optical-off", "printing-absent",
    "drm-connectors-off", "rare-fs-off", "net-protocols-off",
    # console and kiosk
    "kiosk-autologin", "no-other-vts", "ctrl-alt-del-off", "power-keys", "rescue-locked",
    "root-locked", "no-sshd",
    # accounts and sessions
    "login-defs", "pam-faillock", "pam-pwquality", "pam-tmpdir", "shell-timeout",
    "legal-banner",
    # filesystem and boot integrity (checked; the pipeline implements them)
    "root-verity", "amnesic", "uki-measured", "secure-boot",
    # network
    "nft-default-drop", "nft-egress-gateway", "ipv6-policy",
)
