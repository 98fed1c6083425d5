"""OUT/sbom.spdx.json: SPDX 2.3 of every package in the image, plus auditbox itself."""

from __future__ import annotations

import re
import uuid
from typing import Any

from builder import __version__


def _spdx_id(name: str) -> str:
    return "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)


def sbom(image_id: str, packages: dict[str, str], created: str, arch: str) -> dict[str, Any]:
    entries = [{
        "SPDXID": _spdx_id(name), "name": name, "versionInfo": version,
        "downloadLocation": "NOASSERTION", "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION", "supplier": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": f"pkg:deb/debian/{name}@{version}?arch={arch}"}],
    } for name, version in sorted(packages.items())]
    entries.append({
        "SPDXID": _spdx_id("auditbox"), "name": "auditbox", "versionInfo": __version__,
        "downloadLocation": "NOASSERTION", "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0", "copyrightText": "NOASSERTION",
        "supplier": "Organization: auditbox"})
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"auditbox:{image_id}")
    return {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_id, "documentNamespace": f"https://spdx.org/spdxdocs/auditbox-{namespace}",
        "creationInfo": {"created": created, "creators": [f"Tool: auditbox-{__version__}"]},
        "packages": entries,
        "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                           "relatedSpdxElement": e["SPDXID"]} for e in entries],
    }
