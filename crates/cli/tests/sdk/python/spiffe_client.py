"""Warden's test client for the SPIFFE project's Python library (`spiffe` on PyPI).

Runs every Workload API call a Python workload makes against one socket — X.509-SVID,
bundles, JWT-SVID fetched and validated (by the server and locally), an X509Source and a
JwtSource, and a watch that follows the X.509-SVID across rotations — and prints what it saw as
one JSON object, which crates/cli/tests/spiffe_sdks.rs checks. grpcio sends the percent-encoded
socket path as `:authority`, which is what this client proves the server accepts.

Usage: spiffe_client.py SOCKET AUDIENCE ROTATIONS
"""

import json
import sys
import threading

from spiffe import JwtSource, JwtSvid, SpiffeId, WorkloadApiClient, X509Source


def watch_serials(client, count, timeout):
    """Serial numbers of the first `count` distinct SVIDs seen by stream_x509_contexts."""
    serials, errors, done = [], [], threading.Event()

    def on_success(context):
        serial = str(context.default_svid.leaf.serial_number)
        if not serials or serials[-1] != serial:
            serials.append(serial)
        if len(serials) >= count:
            done.set()

    def on_error(error):
        errors.append(repr(error))
        done.set()

    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    done.wait(timeout)
    handle.cancel()
    return serials, errors


def main():
    socket, audience, rotations = "unix://" + sys.argv[1], sys.argv[2], int(sys.argv[3])
    report = {}
    with WorkloadApiClient(socket_path=socket, default_timeout=10) as client:
        svid = client.fetch_x509_svid()
        report["x509_id"] = str(svid.spiffe_id)
        report["x509_chain"] = len(svid.cert_chain)
        bundles = client.fetch_x509_bundles()
        report["bundle_trust_domains"] = sorted(str(b.trust_domain) for b in bundles.bundles)

        jwt = client.fetch_jwt_svid(audience={audience})
        report["jwt_subject"] = str(jwt.spiffe_id)
        report["jwt_audience"] = sorted(jwt.audience)
        report["jwt_validated_by_server"] = str(client.validate_jwt_svid(jwt.token, audience).spiffe_id)
        jwt_bundles = client.fetch_jwt_bundles()
        bundle = jwt_bundles.get_bundle_for_trust_domain(jwt.spiffe_id.trust_domain)
        report["jwt_validated_locally"] = str(JwtSvid.parse_and_validate(jwt.token, bundle, {audience}).spiffe_id)
        try:
            client.validate_jwt_svid(jwt.token, "someone-else")
            report["jwt_wrong_audience_error"] = ""
        except Exception as error:  # the library's ValidateJwtSvidError
            report["jwt_wrong_audience_error"] = f"{type(error).__name__}: {error}"
        try:
            client.fetch_jwt_svid(audience={audience}, subject=SpiffeId("spiffe://warden.local/ns/x/sa/other"))
            report["jwt_other_subject_error"] = ""
        except Exception as error:
            report["jwt_other_subject_error"] = f"{type(error).__name__}: {error}"

        serials, errors = watch_serials(client, rotations + 1, timeout=60)
        report["watched_serials"], report["watch_errors"] = serials, errors

    with X509Source(socket_path=socket, timeout_in_seconds=10) as source:
        report["x509_source_id"] = str(source.svid.spiffe_id)
    with JwtSource(socket_path=socket, timeout_in_seconds=10) as source:
        report["jwt_source_subject"] = str(source.fetch_svid(audience={audience}).spiffe_id)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
