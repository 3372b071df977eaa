#!/usr/bin/env python3
"""Pushes or pulls a Helm chart stored in an OCI registry, as `helm push` /
`helm pull oci://…` do, with oras-py (no helm client is installable here).

Usage: oras_chart.py push HOST:PORT REF CHART.tgz CONFIG.json
       oras_chart.py pull HOST:PORT REF OUT_DIR

REF is `HOST:PORT/repository:tag`; plain HTTP.
"""
import sys

import oras.client

CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
CONFIG = "application/vnd.cncf.helm.config.v1+json"


def main() -> None:
    action, host, ref, *rest = sys.argv[1:]
    client = oras.client.OrasClient(hostname=host, insecure=True)
    if action == "push":
        chart, config = rest
        client.push(
            target=ref,
            files=[f"{chart}:{CHART}"],
            manifest_config=f"{config}:{CONFIG}",
            disable_path_validation=True,
        )
    else:
        (out,) = rest
        for path in client.pull(target=ref, outdir=out):
            print(path)


if __name__ == "__main__":
    main()
