"""dashboard: per-user and per-team dashboards of widgets bound to read-only queries on other targets.

Modelled on Grafana's dashboard model (panels with a `gridPos` on a 24-column grid, a title and a
type; every save a numbered version with its author and message, saved against the version read,
restorable) and on Backstage's home page of cards fed by other plugins. One aggregate call answers
a whole dashboard: every widget's query runs in parallel with the caller's own token, each under its
own timeout, and each slot says what came back (data, forbidden, not found, timeout...).
"""
