"""Load and fault tools, run from the checkout: ``python -m loadtest.bench``, ``python -m loadtest.soak
SCENARIO``, ``locust -f loadtest/locustfile.py``. ``localserver`` is the server-process harness the tests
use as well. Commands and figures: ``loadtest/README.md``.
"""
