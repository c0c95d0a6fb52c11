"""A legacy unittest harness: the mixin starts a server per class and resets after each test.

python -m unittest examples/unittest_harness.py
"""

from __future__ import annotations

import unittest
import urllib.error
import urllib.request

from mockforge_wsgi.testing import ChaosTestCase


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/api/test", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class ResilienceTest(ChaosTestCase, unittest.TestCase):
    def test_the_service_answers_503_while_faulted(self) -> None:
        with self.chaos.faults(http_errors=[503], probability=1.0):
            self.assertEqual(status_of(self.chaos.url), 503)
        self.assertEqual(status_of(self.chaos.url), 200)

    def test_every_test_starts_clean(self) -> None:
        self.assertFalse(self.chaos.status()["enabled"])


if __name__ == "__main__":
    unittest.main()
