"""The mock API's built-ins, where a bound is documented (docs/serving.md)."""

from __future__ import annotations

from werkzeug.test import Client

from mockforge_wsgi.mock_api import MockApp

GIB = 1024**3  # docs/serving.md: /api/bytes/<n> serves at most 1 GiB (written out)


def test_bytes_serves_up_to_1_gib_and_never_more() -> None:
    """Checked by HEAD: the promised length, not a gigabyte sent."""
    client = Client(MockApp())
    small = client.get("/api/bytes/100000", buffered=True)
    assert (small.status_code, len(small.data)) == (200, 100000)
    at = client.head(f"/api/bytes/{GIB}")
    assert (at.status_code, at.headers["Content-Length"]) == (200, str(GIB))
    over = client.head(f"/api/bytes/{GIB + 1}")
    # Refused (400), or served capped: never more than the cap.
    assert over.status_code == 400 or (
        over.status_code == 200 and over.headers["Content-Length"] == str(GIB)
    ), (over.status_code, over.headers)
