#!/bin/bash
# Install what auditbox needs on a Debian 12 host, only what is missing.
set -euo pipefail
APT_PACKAGES=(mmdebstrap qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools mtools dosfstools
              fdisk erofs-utils tpm2-tools sbsigntool uidmap arch-test debian-archive-keyring
              dpkg-dev python3-pip socat
              postgresql openssh-server openssh-client sshpass)  # gateway tests: PostgreSQL, sshd
APT_PACKAGES+=(chromium fonts-dejavu-core)  # console tests: Playwright drives Debian's chromium
APT_PACKAGES+=(haproxy)  # gateway fleet tests and bench (docs/haproxy.cfg)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "error: need root to install: ${missing[*]}" >&2; exit 2; fi
  echo "deps: apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
fi
PY=${PYTHON:-python3}
if ! $PY -I - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, re, sys, tomllib
# what pyproject.toml asks for (dependencies, [test], [lint]): the one list
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
need = [re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]
        for r in [*project["dependencies"], *extras["test"], *extras["lint"]]] + ["auditbox"]
missing = []
for n in need:
    try:
        md.version(n)
    except md.PackageNotFoundError:
        missing.append(n)
# auditbox must be the editable install of THIS checkout (its `auditbox` command runs it)
import json, pathlib
try:
    direct = json.loads(md.distribution("auditbox").read_text("direct_url.json") or "{}")
except md.PackageNotFoundError:
    direct = {}
source = direct.get("url", "").removeprefix("file://")
if not direct.get("dir_info", {}).get("editable") or \
        pathlib.Path(source).resolve() != pathlib.Path.cwd().resolve():
    missing.append("auditbox(editable install of this checkout)")
sys.exit(1 if missing else 0)
PYEOF
then
  echo "deps: pip install -e .[test,lint]"
  $PY -m pip install -q -e ".[test,lint]"
fi
echo "deps: ok"
