"""resources: quotas per org, team and user for sandboxes, CPU, memory, storage and AI credits, and
the reservations other targets (execution) hold against them before they run something."""
