"""The ledger: a SQLite journal that is the single source of truth for a run's progress.

It records windows (a day of the Export API, or one input file), their stage
(``pending -> extracted -> loaded``), every batch sent to Amplitude (``sent`` before the
request, ``done`` only after Amplitude answered 200 for every event in it, or the event
was dead-lettered or parked) and the counts that must add up at the end.
"""

from mp2amp.ledger.store import BatchRow, Ledger, WindowRow

__all__ = ["BatchRow", "Ledger", "WindowRow"]
