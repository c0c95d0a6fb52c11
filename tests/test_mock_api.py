"""The mock API's built-in routes: what they answer, and what they refuse."""

from __future__ import annotations

from werkzeug.test import Client

from mockforge_wsgi.mock_api import MAX_BYTES, MockApp


def test_bytes_serves_n_bytes_up_to_its_cap_and_refuses_more_naming_the_cap() -> None:
    client = Client(MockApp())
    small = client.get("/api/bytes/10")
    assert (small.status_code, small.get_data()) == (200, b"x" * 10)
    at_cap = client.get(f"/api/bytes/{MAX_BYTES}")  # headers only: the body is lazy
    assert (at_cap.status_code, at_cap.headers["Content-Length"]) == (200, str(MAX_BYTES))
    at_cap.close()
    over = client.get("/api/bytes/2000000000")
    assert over.status_code == 400
    assert over.get_json() == {
        "error": "bad request",
        "path": "/api/bytes/2000000000",
        "problems": [
            "n: 2000000000 is more than 1073741824 (1 GiB), the most it serves",
        ],
    }
    assert client.get(f"/api/bytes/{MAX_BYTES + 1}").status_code == 400


GIB = 1024**3  # docs/serving.md: /api/bytes/<n> serves at most 1 GiB (written out)


def test_bytes_serves_up_to_1_gib_and_never_more() -> None:
    """Checked by HEAD: the promised length, not a gigabyte sent."""
    client = Client(MockApp())
    small = client.get("/api/bytes/100000", buffered=True)
    assert (small.status_code, len(small.data)) == (200, 100000)
    at = client.head(f"/api/bytes/{GIB}")
    assert (at.status_code, at.headers["Content-Length"]) == (200, str(GIB))
    over = client.head(f"/api/bytes/{GIB + 1}")
    assert over.status_code == 400  # refused naming the cap, never served capped
