"""execution: runs a command or code for a plan step in a sandbox, as an asynchronous job.

Modelled on Judge0 (a submission: source or command, limits on CPU time, wall time, memory, processes
and output, an outcome saying which limit stopped it) and the OpenHands runtime (a sandbox with its own
working directory, files in and out, output streamed while it runs). Jobs wait in a PostgreSQL queue
that survives restarts; the replicas' workers claim them with `FOR UPDATE SKIP LOCKED`, so no two run
one job. Locally a job runs in bubblewrap (namespaces) or, where the kernel refuses them, under rlimits
and a uid of its own; in Kubernetes it is a Job with the restricted security profile. Each job holds a
reservation in `resources` from creation to its end.
"""
