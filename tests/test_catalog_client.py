"""The model catalog, balance and token allow-list: against the emulator on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web

from runcomfy_async import (
    DEFAULT_BASE_URL,
    AuthenticationError,
    InputValidationError,
    InvalidRequestError,
    ModelInfo,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    Request,
    Response,
    RunComfyClient,
)
from runcomfy_async._transport import BALANCE_URL, AiohttpTransport, origin_of, token_origins
from runcomfy_async.catalog import ModelsClient, Registry, csv_column_types, latency_prior
from runcomfy_async.emulator import Emulator, SyntheticModel
from runcomfy_async.inputs import estimate_cost
from runcomfy_async.testing import MockTransport

TEST_TIME_SCALE = 0.001

I2V = "kling/kling-3.0/standard/image-to-video"
T2V = "kling/kling-3.0/pro/text-to-video"

IMAGE_MODEL = SyntheticModel(
    "acme/image-9/text-to-image",
    {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "num_images": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
            "guidance": {"type": "float", "minimum": 0, "maximum": 20, "default": None},
        },
    },
    price_usd=0.03,
    price_unit="output",
    display_name="Acme Image 9",
    categories=("text-to-image",),
    kind="image",
)


def many_models(n: int) -> list[SyntheticModel]:
    return [
        SyntheticModel(f"acme/bulk/m{i:03d}", {"type": "object"}, 0.01, categories=("bulk",))
        for i in range(n)
    ]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    models = [IMAGE_MODEL, *many_models(230)]
    async with Emulator(time_scale=TEST_TIME_SCALE, catalog_models=models, balance_usd=7.5) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[RunComfyClient]:
    poll = PollPolicy(time_scale=emu.time_scale)
    async with RunComfyClient(
        emu.token, base_url=emu.base_url, poll=poll, requests_per_second=None
    ) as c:
        yield c


# -- list / get / categories -------------------------------------------------------------


async def test_list_pages_through_the_whole_catalog(client: RunComfyClient) -> None:
    ids = [m.model_id async for m in client.models.list()]
    # 230 bulk + 1 synthetic + 4 bundled Kling tiers, across three pages of 100
    assert len(ids) == len(set(ids)) == 235
    assert I2V in ids and IMAGE_MODEL.model_id in ids


async def test_list_filters_by_category_kind_and_search(client: RunComfyClient) -> None:
    bulk = [m async for m in client.models.list(category="bulk")]
    assert len(bulk) == 230 and all(m.categories == ("bulk",) for m in bulk)
    images = [m.model_id async for m in client.models.list(kind="image")]
    assert images == [IMAGE_MODEL.model_id]
    found = [m.model_id async for m in client.models.list(search="ACME IMAGE")]
    assert found == [IMAGE_MODEL.model_id]


async def test_get_returns_the_entry_with_its_schema(client: RunComfyClient) -> None:
    info = await client.models.get(IMAGE_MODEL.model_id)
    assert (info.display_name, info.price, info.price_unit) == ("Acme Image 9", 0.03, "output")
    assert info.input_schema is not None and "num_images" in info.input_schema["properties"]
    assert info.raw["kind"] == "image"  # unknown keys are kept


async def test_get_of_an_unknown_model_raises(client: RunComfyClient) -> None:
    with pytest.raises(InvalidRequestError):
        await client.models.get("acme/none/here")


async def test_categories(client: RunComfyClient) -> None:
    cats = await client.models.categories()
    assert {"bulk", "text-to-image", "image-to-video", "text-to-video"} <= set(cats)


# -- validation and cost from the catalog --------------------------------------------------


async def test_a_catalog_model_is_validated_before_anything_is_sent(
    client: RunComfyClient, emu: Emulator
) -> None:
    spec = await client.models.spec(IMAGE_MODEL.model_id)
    assert spec is not None and spec.source == "catalog"
    with pytest.raises(InputValidationError) as caught:
        await client.submit(IMAGE_MODEL.model_id, {"prompt": "x", "num_images": 5})
    assert [p.path for p in caught.value.problems] == ["num_images"]
    assert emu.counters.submit == 0
    job = await client.submit(IMAGE_MODEL.model_id, {"prompt": "x", "num_images": 4})
    assert (await job).done


async def test_estimate_cost_uses_the_catalog_price(client: RunComfyClient) -> None:
    await client.models.spec(IMAGE_MODEL.model_id)
    registry = client.models.registry
    usd = estimate_cost(IMAGE_MODEL.model_id, {"prompt": "x", "num_images": 3}, registry=registry)
    assert usd == pytest.approx(0.09)
    assert estimate_cost(IMAGE_MODEL.model_id, {"prompt": "x"}, registry=registry) == 0.03
    with pytest.raises(LookupError):
        estimate_cost(IMAGE_MODEL.model_id, {"prompt": "x"})  # not in the bundled registry


async def test_a_catalog_kling_entry_keeps_the_bundled_rules_and_prior(
    client: RunComfyClient,
) -> None:
    spec = await client.models.spec(T2V)
    assert spec is not None and spec.source == "catalog"
    assert spec.latency is not None and spec.latency.low == latency_prior(T2V)
    assert [r.name for r in spec.rules] == [
        "prompts_not_blank",
        "segments_add_up",
        "elements_not_empty",
    ]
    # with audio, the bundled surcharge ratio is kept
    assert spec.estimate_cost({"prompt": "x", "duration": 10}) == pytest.approx(1.68)


async def test_an_unknown_model_has_no_spec(client: RunComfyClient) -> None:
    assert await client.models.spec("acme/none/here") is None


# -- real inputs against the emulator ---------------------------------------------------

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.mark.parametrize(
    "start",
    [
        "data:image/png;base64," + base64.b64encode(PNG_1PX).decode(),
        "https://cdn.example.com/img/12345?sig=abc",
    ],
    ids=["data-uri", "no-extension"],
)
async def test_a_data_uri_and_an_extensionless_url_are_accepted(
    client: RunComfyClient, emu: Emulator, start: str
) -> None:
    job = await client.submit(I2V, {"prompt": "a fox", "start_image_url": start})
    assert (await job).done
    assert emu.job(job.request_id).payload["start_image_url"] == start


async def test_a_data_uri_larger_than_a_megabyte_reaches_the_emulator(
    client: RunComfyClient, emu: Emulator
) -> None:
    start = "data:image/png;base64," + "A" * (3 * 1024 * 1024)
    job = await client.submit(I2V, {"prompt": "a fox", "start_image_url": start})
    assert (await job).done


async def test_an_oversized_data_uri_is_refused_with_its_field_path(
    client: RunComfyClient, emu: Emulator
) -> None:
    big = "data:image/png;base64," + "A" * (70 * 1024 * 1024)  # ~52 MB decoded
    body = {"prompt": "a fox", "start_image_url": "https://a.io/b.png"}
    body["elements"] = [{"reference_image_urls": ["https://a.io/c.png", big]}]
    with pytest.raises(InputValidationError) as caught:
        await client.submit(I2V, body)
    (problem,) = caught.value.problems
    assert problem.path == "elements[0].reference_image_urls[1]"
    assert "more than the 52428800 bytes" in problem.rule
    assert emu.counters.submit == 0


# -- balance and the token's origins -----------------------------------------------------


async def test_balance_from_the_emulator(client: RunComfyClient, emu: Emulator) -> None:
    balance = await client.balance()
    assert (balance.usd, balance.currency) == (7.5, "USD")
    emu.catalog.balance_usd = 1.25
    assert (await client.balance()).usd == 1.25


def test_the_allow_list_is_the_model_api_and_the_balance_origin() -> None:
    assert token_origins(DEFAULT_BASE_URL, BALANCE_URL) == {
        "https://model-api.runcomfy.net",
        "https://api.runcomfy.net",
    }
    assert origin_of("HTTPS://Api.RunComfy.net:443/prod/v2/balance") == "https://api.runcomfy.net"


async def test_a_client_on_the_public_api_asks_the_public_balance_origin() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, body=b'{"balance_usd": 3, "currency": "USD"}')

    async with RunComfyClient("t", transport=MockTransport(handler)) as client:
        assert (await client.balance()).usd == 3.0
    assert seen[0].url == BALANCE_URL


class _Recorder:
    """A loopback server that records the Authorization header of every request."""

    def __init__(self) -> None:
        self.auth: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def any_route(request: web.Request) -> web.Response:
            self.auth.append(request.headers.get("Authorization"))
            return web.json_response({"balance_usd": 42.0, "currency": "USD"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_route)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_the_token_reaches_the_balance_origin_and_no_other_foreign_origin(
    emu: Emulator,
) -> None:
    wallet, foreign = _Recorder(), _Recorder()
    await wallet.start()
    await foreign.start()
    try:
        async with RunComfyClient(
            emu.token, base_url=emu.base_url, balance_url=wallet.url + "/prod/v2/balance"
        ) as client:
            assert (await client.balance()).usd == 42.0
            transport = client._transport
            assert isinstance(transport, AiohttpTransport)
            with pytest.raises(ValueError, match="not one of the origins allowed"):
                await transport.send(Request("GET", "/x", url=foreign.url + "/x"))
        assert wallet.auth == [f"Bearer {emu.token}"]
        assert foreign.auth == []  # refused before anything was sent
    finally:
        await wallet.close()
        await foreign.close()


async def test_the_token_is_read_from_runcomfy_token_as_an_alias(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator
) -> None:
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    monkeypatch.setenv("RUNCOMFY_TOKEN", emu.token)
    async with RunComfyClient(base_url=emu.base_url) as client:
        assert (await client.balance()).usd == 7.5
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "the-primary-name-wins")
    async with RunComfyClient(base_url=emu.base_url) as client:
        with pytest.raises(Exception, match="token"):
            await client.balance()


# -- the catalog client on its own: lenient parsing, paging, cache -----------------------


def test_model_info_parses_leniently_and_keeps_unknown_keys() -> None:
    info = ModelInfo.from_json(
        {
            "model_id": "a/b",
            "display_name": 5,
            "categories": ["x", 3],
            "base_price_usd": "cheap",
            "price_unit": "second",
            "input_schema": [],
            "new_field": {"k": 1},
        }
    )
    assert (info.display_name, info.categories, info.price, info.input_schema) == (
        None,
        ("x",),
        None,
        None,
    )
    assert info.raw["new_field"] == {"k": 1}


class _FakeCatalog:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, path: str, params: Mapping[str, str]) -> Any:
        self.calls.append((path, dict(params)))
        if path.endswith("/categories"):
            return {"categories": ["a"]}
        offset, limit = int(params["offset"]), int(params["limit"])
        models = [{"model_id": f"m/{i}"} for i in range(offset, min(offset + limit, self.n))]
        return {"models": models, "total": self.n}


async def test_paging_asks_with_limit_and_offset_until_total() -> None:
    fake = _FakeCatalog(5)
    models = ModelsClient(fake, page_size=2)
    ids = [m.model_id async for m in models.list(search="x")]
    assert ids == [f"m/{i}" for i in range(5)]
    assert [(c[1]["offset"], c[1]["limit"], c[1]["search"]) for c in fake.calls] == [
        ("0", "2", "x"),
        ("2", "2", "x"),
        ("4", "2", "x"),
    ]


async def test_answers_are_cached_for_the_ttl() -> None:
    fake = _FakeCatalog(1)
    now = [0.0]
    models = ModelsClient(fake, ttl=10.0, clock=lambda: now[0], registry=Registry())
    await models.categories()
    await models.categories()
    assert len(fake.calls) == 1
    now[0] = 10.5
    await models.categories()
    assert len(fake.calls) == 2


async def test_spec_falls_back_to_the_bundled_one_when_the_catalog_does_not_know_it() -> None:
    async def not_found(path: str, params: Mapping[str, str]) -> Any:
        raise NotFoundError("no", status_code=404)

    models = ModelsClient(not_found, registry=Registry(parent=None))
    assert await models.spec("acme/x") is None


def test_csv_column_types_come_from_the_schema() -> None:
    assert csv_column_types(I2V) == {
        "multi_prompt": "json",
        "duration": "int",
        "generate_audio": "bool",
        "elements": "json",
        "cfg_scale": "float",
    }
    assert csv_column_types("acme/unknown") == {}


def test_latency_priors_are_the_low_public_figures() -> None:
    assert latency_prior(I2V) == 60.0
    assert latency_prior(T2V) == 90.0
    assert latency_prior("acme/unknown") is None


# -- wire habits -----------------------------------------------------------------------


async def test_only_the_submit_post_gets_the_90_second_read_timeout() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.method == "POST":
            return Response(200, body=b'{"request_id": "r1"}')
        return Response(200, body=b'{"request_id": "r1", "status": "completed"}')

    async with RunComfyClient("t", transport=MockTransport(handler)) as client:
        job = await client.submit("acme/model", {"prompt": "x"})
        await client.status(job.request_id)
    submit, status = seen[0], seen[-1]
    assert (submit.method, submit.read_timeout) == ("POST", 90.0)
    assert (status.method, status.read_timeout) == ("GET", None)


async def test_another_users_request_is_a_permission_error_not_a_bad_token() -> None:
    async with Emulator(time_scale=TEST_TIME_SCALE, token=("alice", "bob")) as emu:
        async with RunComfyClient("alice", base_url=emu.base_url) as alice:
            job = await alice.submit(T2V, {"prompt": "a fox"})
        async with RunComfyClient("bob", base_url=emu.base_url) as bob:
            with pytest.raises(PermissionDeniedError) as caught:
                await bob.status(job.request_id)
    assert not isinstance(caught.value, AuthenticationError)
    assert (caught.value.status_code, caught.value.error_code) == (403, 403001)
