"""What the local API's handlers find on the application and the request (aiohttp typed keys).

Its own module so that every handler module (the API, metrics, the console) reads the gateway the
same way without importing the route table's module.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..service.evidence import EvidenceCollector
from ..service.gateway import Caller, Gateway

GATEWAY: Final = web.AppKey("gateway", Gateway)
EVIDENCE: Final = web.AppKey("evidence", EvidenceCollector)
CALLER: Final = web.RequestKey("caller", Caller)  # the authenticated caller of a guarded route
