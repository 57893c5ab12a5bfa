"""ai: the platform's model gateway. Providers (OpenAI, Anthropic, any OpenAI-compatible server),
deployments of their models and model groups (aliases) routed with retries, fallbacks and cooldowns,
behind OpenAI- and Anthropic-compatible APIs; budgets reserved in `usage` before a call and settled
with its real cost after.

Modelled on the LiteLLM proxy (router, deployments, model groups, spend) and OpenRouter.
"""
