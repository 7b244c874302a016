"""The client and the emulator apply the same input rules (one source of truth)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from runcomfy_async.emulator import Emulator
from runcomfy_async.inputs import validate_payload

I2V = "kling/kling-3.0/standard/image-to-video"
T2V = "kling/kling-3.0/pro/text-to-video"
IMAGE = "https://images.example.com/a.png"

CASES: list[tuple[str, dict[str, Any]]] = [
    (T2V, {}),
    (T2V, {"prompt": "  "}),
    (T2V, {"prompt": "x", "duration": 16, "cfg_scale": 1.5, "aspect_ratio": "4:3"}),
    (T2V, {"prompt": "x", "duration": 2, "sound": "yes"}),
    (T2V, {"prompt": "x", "duration": 9, "multi_prompt": [{"prompt": "a", "duration": 3}]}),
    (T2V, {"prompt": "x", "multi_prompt": [{"prompt": "", "duration": 20}] * 2}),
    (I2V, {"prompt": "x"}),
    (I2V, {"prompt": "x", "start_image_url": "http://images.example.com/a.png"}),
    (I2V, {"prompt": "x", "start_image_url": "https://images.example.com/a.gif"}),
    (I2V, {"prompt": "x", "start_image_url": IMAGE, "elements": [{}] * 4}),
    (I2V, {"prompt": "x", "start_image_url": IMAGE, "shot_type": "intelligent"}),
    (I2V, {"prompt": "x", "start_image_url": IMAGE, "aspect_ratio": "16:9", "duration": 3.5}),
    (I2V, {"prompt": "x", "start_image_url": "data:image/gif;base64,R0lGOD=="}),
    (
        I2V,
        {
            "prompt": "x",
            "start_image_url": IMAGE,
            "elements": [{"video_url": "data:image/png;base64,AAAA"}],
        },
    ),
]


def _paths(detail: list[dict[str, Any]]) -> set[str]:
    paths = set()
    for item in detail:
        loc = [p for p in item["loc"] if p != "body"]
        text = ""
        for part in loc:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        paths.add(text)
    return paths


@pytest.mark.parametrize(("model_id", "payload"), CASES)
async def test_the_emulator_refuses_exactly_what_the_client_refuses(
    emulator: Emulator, model_id: str, payload: dict[str, Any]
) -> None:
    # The emulator, like a newer server, tolerates unknown fields.
    local = {p.path for p in validate_payload(model_id, payload, allow_unknown_fields=True)}
    assert local, "every case here is invalid"
    headers = {"Authorization": f"Bearer {emulator.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(f"{emulator.base_url}/v1/models/{model_id}", json=payload) as resp,
    ):
        assert resp.status == 422
        body = await resp.json()
    assert _paths(body["detail"]) == local
    assert emulator.counters.jobs_created == 0


@pytest.mark.parametrize(
    ("model_id", "start"),
    [
        (I2V, IMAGE),
        (I2V, "https://cdn.example.com/img/12345?sig=abc"),
        (I2V, "data:image/png;base64,iVBORw0KGgo="),
        (T2V, None),
    ],
)
async def test_the_emulator_accepts_what_the_client_accepts(
    emulator: Emulator, model_id: str, start: str | None
) -> None:
    payload: dict[str, Any] = {"prompt": "a fox", "duration": 6}
    if start is not None:
        payload["start_image_url"] = start
    payload["multi_prompt"] = [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 3}]
    assert validate_payload(model_id, payload) == []
    headers = {"Authorization": f"Bearer {emulator.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(f"{emulator.base_url}/v1/models/{model_id}", json=payload) as resp,
    ):
        assert resp.status == 200
