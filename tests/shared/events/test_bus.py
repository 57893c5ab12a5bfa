import pytest

from coder.shared.events.bus import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("ai.request.completed", "ai.request.completed", True),
        ("ai.*.completed", "ai.request.completed", True),
        ("ai.*", "ai.request.completed", False),
        ("ai.#", "ai.request.completed", True),
        ("ai.#", "ai", True),
        ("#", "anything.at.all", True),
        ("#.completed", "ai.request.completed", True),
        ("ai.#.completed", "ai.completed", True),
        ("ai.#.completed", "ai.request.completed.not", False),
        ("*.request.*", "usage.request.x", True),
        ("secrets.secret.rotated", "secrets.secret.created", False),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches
