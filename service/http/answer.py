"""What a route hands the edge to send: a codec's `Encoded` body (status 200), or an `Answer`
that also says its HTTP status (problems, created resources)."""

from __future__ import annotations

from dataclasses import dataclass

from service.codecs.pipeline import Encoded


@dataclass(slots=True)
class Answer(Encoded):
    status: int = 200


def status_of(answer: Encoded) -> int:
    return answer.status if isinstance(answer, Answer) else 200
