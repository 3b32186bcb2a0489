"""The SMS side: verifications, polling their providers for the code, and notifying the user.

``codes`` (no I/O) finds a code in a text; ``providers/`` read a verification's messages at a provider
(``fake``, ``http``); ``store`` holds every SQL statement of the side; ``poller`` is the
``SMSPollingService``; ``stats`` its figures; ``service`` ties them into the app. Nothing outside
imports more than ``SmsService`` and ``check_settings`` (and the routes, the records in ``schemas``).
"""

from __future__ import annotations

from .service import SmsService, check_settings

__all__ = ["SmsService", "check_settings"]
