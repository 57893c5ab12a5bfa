import asyncio
import random

import pytest

from coder.shared.events.bus import _Acknowledgements, topic_matches


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


class _Broker:
    """A channel's acknowledgements as RabbitMQ reckons them: a tag settled twice is a channel error
    ("unknown delivery tag"); each ack's frame is written after a yield, as a socket write may."""

    def __init__(self, deliveries: int) -> None:
        self.outstanding = set(range(1, deliveries + 1))

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        if tag not in self.outstanding:
            raise AssertionError(f"unknown delivery tag {tag}")
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= covered


@pytest.mark.parametrize("seed", range(20))
async def test_acknowledgements_never_settle_a_tag_twice(seed: int) -> None:
    """Deliveries finish in any order and their acks interleave; every tag is settled exactly once."""
    rng = random.Random(seed)
    order = list(range(1, 41))
    rng.shuffle(order)
    broker, acks = _Broker(len(order)), _Acknowledgements()

    async def finish(tag: int) -> None:
        for _ in range(rng.randrange(6)):  # handlers take their time
            await asyncio.sleep(0)
        acks.handled.add(tag)
        await asyncio.sleep(0)
        await acks.send(broker)  # type: ignore[arg-type]  # the part of a channel acks use

    await asyncio.gather(*(finish(tag) for tag in order))
    assert broker.outstanding == set()
