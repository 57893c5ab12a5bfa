"""usage: usage events, meters over them, and budgets checked before spend and settled after it.

Modelled on OpenMeter (CloudEvents ingestion, meters with windows and group-by) and LiteLLM spend
tracking (budgets per key, user, team, org). Reservations are atomic in Redis so they hold across
replicas; PostgreSQL is the ledger, Redis only a cache of it.
"""
