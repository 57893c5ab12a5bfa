"""workflow: durable DAGs of steps (Temporal, Argo).

A definition is a versioned DAG of steps: an HTTP call to a target, a job on `execution`, a prompt
through `ai`, a wait for a bus event, a human approval. A run keeps the version it started with; its
state and every attempt of every step live in PostgreSQL, so a process killed mid-run resumes on
restart: workers claim ready steps with `FOR UPDATE SKIP LOCKED` under a lease, and a step's result
is recorded only by the holder of its current lease (a fencing counter), so two replicas never run
the same step twice and a completed step never runs again. Steps act for the user who started the run
through a delegation the gateway issued for it (docs/services/workflow.md, "Identity").
"""
