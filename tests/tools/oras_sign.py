#!/usr/bin/env python3
"""Attaches a cosign-style signature to an image in an OCI registry, as
`cosign sign` does, with oras-py: a simple-signing payload pushed as the
`sha256-<hex>.sig` tag with the image as its `subject` (an OCI 1.1
referrer), and the referrers tag (`sha256-<hex>`, an index of the image's
referrers) that OCI 1.1 clients write to a registry without the
referrers API.

Usage: oras_sign.py HOST:PORT REPOSITORY DIGEST MEDIA_TYPE SIZE WORKDIR

Prints the signature manifest's digest; plain HTTP.
"""
import json
import os
import sys
import urllib.request

import oras.client
import oras.oci

PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def main() -> None:
    host, repository, digest, media_type, size, workdir = sys.argv[1:]
    algorithm, hex_digest = digest.split(":")
    payload = os.path.join(workdir, "payload.json")
    with open(payload, "w") as f:
        json.dump(
            {
                "critical": {
                    "identity": {"docker-reference": f"{host}/{repository}"},
                    "image": {"docker-manifest-digest": digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            },
            f,
        )
    annotations = os.path.join(workdir, "annotations.json")
    with open(annotations, "w") as f:
        json.dump({payload: {"dev.cosignproject.cosign/signature": "MEUCIQDtest"}}, f)
    client = oras.client.OrasClient(hostname=host, insecure=True)
    tag = f"{algorithm}-{hex_digest}"
    client.push(
        target=f"{host}/{repository}:{tag}.sig",
        files=[f"{payload}:{PAYLOAD}"],
        annotation_file=annotations,
        subject=oras.oci.Subject(media_type, digest, int(size)),
        disable_path_validation=True,
    )
    base = f"http://{host}/v2/{repository}/manifests"
    head = urllib.request.Request(f"{base}/{tag}.sig", method="HEAD", headers={"Accept": MANIFEST})
    with urllib.request.urlopen(head) as resp:
        signature = resp.headers["Docker-Content-Digest"]
        length = int(resp.headers["Content-Length"])
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": MANIFEST, "digest": signature, "size": length, "artifactType": SIGNATURE}
        ],
    }
    put = urllib.request.Request(
        f"{base}/{tag}",
        data=json.dumps(index).encode(),
        method="PUT",
        headers={"Content-Type": INDEX},
    )
    urllib.request.urlopen(put).close()
    print(signature)


if __name__ == "__main__":
    main()
