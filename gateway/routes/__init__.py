"""The gateway's own routes: sign-in under `/auth`, people under `/api/users|orgs|teams`, the well-known
documents and `/docs`, the internal workload-token exchange. They are matched before the `/api` proxy
mount."""

from fastapi import APIRouter

from coder.gateway.routes.auth import router as auth
from coder.gateway.routes.docs import router as docs
from coder.gateway.routes.orgs import router as orgs
from coder.gateway.routes.teams import router as teams
from coder.gateway.routes.users import router as users
from coder.gateway.routes.wellknown import router as wellknown
from coder.gateway.routes.workload import router as workload

# One flat router of the areas' routes (each already has its prefix and tags): FastAPI builds a route
# again for each router that includes it, so nesting the areas would build every route once more.
router = APIRouter(
    routes=[route for area in (auth, users, orgs, teams, wellknown, docs, workload) for route in area.routes]
)
