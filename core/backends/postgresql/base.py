"""Django's PostgreSQL backend with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` (config/settings.py) Django checks a persistent connection before the first
query of every request, and its PostgreSQL check is a ``SELECT 1``: one more round trip on every request,
which on a loaded 2-core node was about a sixth of the token endpoint's time (bench/tokens.py,
docs/benchmarks.md). A connection that the server has closed (restart, idle timeout, terminated backend)
has something to read on its socket: the server's last message, then end of file. So an idle connection
whose socket has nothing to read is as it was left, and only one with something pending (that, or a
rare notice) is checked the old way.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.info.transaction_status == TransactionStatus.UNKNOWN:
            return False
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        return super().is_usable()
