"""namaskah-notify: real-time notifications over WebSocket, stored, ordered and replayed.

Modules, in the order imports flow: ``config``, ``errors``, ``schemas``, ``protocol``, ``auth``,
``models``, ``db``, ``store``, ``brokers``, ``stats``, ``hub``, ``dispatcher``, ``deps``, ``routes``,
``app``, ``server``.
"""

__version__ = "0.1.0"
