"""Failed logins slowed down per client address (issue 15.14): ``user_auth``, ``api_auth``
and Basic credentials get 429 with ``Retry-After`` after KAZOO_VM_AUTH_FAILURES failures,
without letting failures from elsewhere lock a user out.

The HTTP tests run the real service with a throttle on a hand-driven clock (waiting
``Retry-After`` is a step of that clock); a second client address is 127.0.0.2, which
reaches the server's 127.0.0.1 over the loopback interface."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Api, Reply, assert_error, login, make_account

from kazoo_vm import appkeys
from kazoo_vm.app import create_app, server_options
from kazoo_vm.auth.throttle import ADDRESS_FACTOR, BURST_FACTOR, LoginThrottle, address_key
from kazoo_vm.config import Config
from kazoo_vm.errors import InvalidCredentials, TooManyRequests
from kazoo_vm.services import Services

Client = TestClient[web.Request, web.Application]
OTHER_ADDRESS = "127.0.0.2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Scene:
    client: Client
    clock: Clock
    account: dict[str, Any]

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def send(self, method: str, path: str, *, data: Any = None, headers: dict[str, str] | None = None,
                   session: aiohttp.ClientSession | None = None) -> Reply:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if data is not None:
            kwargs["json"] = {"data": data}
        async with (session or self.client.session).request(method, self.url(path), **kwargs) as response:
            return Reply(response.status, response.headers, await response.read())

    async def user_auth(self, password: str, *, session: aiohttp.ClientSession | None = None,
                        headers: dict[str, str] | None = None, **account: str) -> Reply:
        data = {"credentials": md5_credentials("alice", password),
                **(account or {"account_name": self.account["name"]})}
        return await self.send("PUT", "/v2/user_auth", data=data, headers=headers, session=session)

    async def basic(self, password: str) -> Reply:
        encoded = base64.b64encode(f"{self.account['_id']}:{md5_credentials('alice', password)}".encode()).decode()
        return await self.send("GET", f"/v2/accounts/{self.account['_id']}/vmboxes",
                               headers={"Authorization": f"Basic {encoded}"})

    async def api_auth(self, api_key: str) -> Reply:
        return await self.send("PUT", "/v2/api_auth", data={"api_key": api_key})


def md5_credentials(username: str, password: str) -> str:
    return hashlib.md5(f"{username}:{password}".encode()).hexdigest()


async def throttled_client(aiohttp_client: Any, config: Config, couch_url: str, clock: Clock) -> Client:
    app = create_app(config, couch_url)
    app[appkeys.THROTTLE] = LoginThrottle.from_config(config, clock=clock)
    server = TestServer(app)
    await server.start_server(**server_options(config))
    client: Client = await aiohttp_client(server)
    return client


@pytest.fixture
async def scene(aiohttp_client: Any, config: Config, couch_url: str, services: Services,
                account: dict[str, Any]) -> Scene:
    await services.users.create(account["_id"], username="alice", password="right")
    clock = Clock()
    return Scene(await throttled_client(aiohttp_client, config, couch_url, clock), clock, account)


@pytest.fixture
async def elsewhere() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose requests come from another address (127.0.0.2)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(OTHER_ADDRESS, 0))) as session:
        yield session


def assert_throttled(reply: Reply) -> int:
    """The 429 envelope; its ``Retry-After`` (whole seconds, also in ``data``)."""
    data = assert_error(reply, 429, "too_many_requests")
    retry_after = int(reply.headers["Retry-After"])
    assert retry_after >= 1
    assert data == {"message": "too many failed logins", "retry_after": retry_after}
    return retry_after


async def fail(scene: Scene, times: int, **account: str) -> None:
    for attempt in range(times):
        reply = await scene.user_auth(f"wrong-{attempt}", **account)
        assert_error(reply, 401, "invalid_credentials")


# -- user_auth --------------------------------------------------------------------------

async def test_sixth_wrong_password_from_one_address_is_429_with_retry_after(scene: Scene) -> None:
    await fail(scene, 5)
    assert assert_throttled(await scene.user_auth("wrong-6")) == 1


async def test_while_throttled_the_right_password_is_429_and_passes_after_retry_after(scene: Scene) -> None:
    await fail(scene, 5)
    retry_after = assert_throttled(await scene.user_auth("right"))
    scene.clock.now += retry_after
    assert (await scene.user_auth("right")).status == 201


async def test_each_failure_beyond_the_limit_doubles_the_wait(scene: Scene) -> None:
    await fail(scene, 5)
    waits = []
    for attempt in range(3):
        waits.append(assert_throttled(await scene.user_auth(f"again-{attempt}")))
        scene.clock.now += waits[-1]
        assert_error(await scene.user_auth(f"again-{attempt}"), 401, "invalid_credentials")
    assert waits == [1, 2, 4]


async def test_requests_refused_while_throttled_do_not_lengthen_the_wait(scene: Scene) -> None:
    await fail(scene, 5)
    scene.clock.now += 1
    assert_error(await scene.user_auth("wrong-6"), 401, "invalid_credentials")  # the sixth: two seconds
    for _ in range(20):
        assert assert_throttled(await scene.user_auth("right")) == 2
    scene.clock.now += 2
    assert (await scene.user_auth("right")).status == 201


async def test_another_address_is_not_blocked(scene: Scene, elsewhere: aiohttp.ClientSession) -> None:
    await fail(scene, 5)
    assert_throttled(await scene.user_auth("right"))
    assert_error(await scene.user_auth("wrong", session=elsewhere), 401, "invalid_credentials")
    assert (await scene.user_auth("right", session=elsewhere)).status == 201


async def test_x_forwarded_for_does_not_change_the_address(scene: Scene) -> None:
    await fail(scene, 5)
    assert_throttled(await scene.user_auth("right", headers={"X-Forwarded-For": "203.0.113.9"}))


async def test_behind_a_trusted_proxy_each_forwarded_client_counts_apart(
        aiohttp_client: Any, config: Config, couch_url: str, services: Services, account: dict[str, Any]) -> None:
    await services.users.create(account["_id"], username="alice", password="right")
    clock = Clock()
    behind = Scene(await throttled_client(aiohttp_client, replace(config, trusted_proxies=("127.0.0.0/8",)),
                                          couch_url, clock), clock, account)
    attacker = {"X-Forwarded-For": "203.0.113.5"}
    for attempt in range(5):
        assert_error(await behind.user_auth(f"wrong-{attempt}", headers=attacker), 401, "invalid_credentials")
    assert_throttled(await behind.user_auth("right", headers=attacker))
    # a forged left part changes nothing: the address the proxy saw is the last one
    assert_throttled(await behind.user_auth("right", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"}))
    assert (await behind.user_auth("right", headers={"X-Forwarded-For": "203.0.113.6"})).status == 201


async def test_another_account_from_the_same_address_is_not_blocked(scene: Scene, services: Services) -> None:
    other = await make_account(services, name=f"Other {scene.account['name']}")
    await services.users.create(other["_id"], username="alice", password="right")
    await fail(scene, 5)
    assert (await scene.user_auth("right", account_name=other["name"])).status == 201


async def test_the_same_account_by_another_spelling_of_its_name_is_blocked(scene: Scene) -> None:
    await fail(scene, 5)
    shouted = " ".join(scene.account["name"].upper().split())
    assert_throttled(await scene.user_auth("right", account_name=shouted + "!"))


async def test_a_realm_and_a_name_count_apart(scene: Scene) -> None:
    """Each spelling of the account counts on its own; the address alone still limits the sum."""
    await fail(scene, 5)
    assert (await scene.user_auth("right", realm=scene.account["realm"])).status == 201


async def test_naming_a_blocked_account_beside_another_is_blocked(scene: Scene) -> None:
    await fail(scene, 5, realm=scene.account["realm"])
    assert_throttled(await scene.user_auth("right", account_name="some other", realm=scene.account["realm"]))


async def test_a_success_clears_the_count_of_that_account(scene: Scene) -> None:
    await fail(scene, 4)
    assert (await scene.user_auth("right")).status == 201
    await fail(scene, 5)  # five more before a block, not one
    assert_throttled(await scene.user_auth("right"))


async def test_failures_older_than_the_window_are_forgotten(scene: Scene, config: Config) -> None:
    await fail(scene, 4)
    scene.clock.now += config.auth_window
    await fail(scene, 4)
    assert (await scene.user_auth("right")).status == 201


async def test_the_address_alone_is_blocked_after_ten_times_the_failures(aiohttp_client: Any, config: Config,
                                                                         couch_url: str, services: Services,
                                                                         account: dict[str, Any]) -> None:
    """Guesses spread over many accounts: the address itself is limited."""
    await services.users.create(account["_id"], username="alice", password="right")
    config, clock = replace(config, auth_failures=2), Clock()
    scene = Scene(await throttled_client(aiohttp_client, config, couch_url, clock), clock, account)
    for index in range(2 * ADDRESS_FACTOR):
        assert_error(await scene.user_auth("wrong", account_name=f"sprayed {index}"), 401, "invalid_credentials")
    assert_throttled(await scene.user_auth("right"))


async def test_parallel_wrong_passwords_are_not_all_checked(scene: Scene) -> None:
    replies = await asyncio.gather(*(scene.user_auth(f"wrong-{attempt}") for attempt in range(60)))
    statuses = [reply.status for reply in replies]
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= 5 * BURST_FACTOR


async def test_zero_failures_turns_the_throttle_off(aiohttp_client: Any, config: Config, couch_url: str,
                                                    services: Services, account: dict[str, Any]) -> None:
    await services.users.create(account["_id"], username="alice", password="right")
    config, clock = replace(config, auth_failures=0), Clock()
    scene = Scene(await throttled_client(aiohttp_client, config, couch_url, clock), clock, account)
    await fail(scene, 12)
    assert (await scene.user_auth("right")).status == 201


# -- Basic and api_auth -----------------------------------------------------------------

async def test_basic_auth_is_throttled_the_same_way(scene: Scene) -> None:
    for attempt in range(5):
        assert_error(await scene.basic(f"wrong-{attempt}"), 401, "invalid_credentials")
    retry_after = assert_throttled(await scene.basic("right"))
    scene.clock.now += retry_after
    assert (await scene.basic("right")).status == 200


async def test_a_token_still_works_while_basic_is_throttled(scene: Scene) -> None:
    api = Api(scene.client, scene.account["_id"], await login(scene.client, scene.account["pvt_api_key"]))
    for attempt in range(5):
        await scene.basic(f"wrong-{attempt}")
    assert_throttled(await scene.basic("right"))
    assert (await api.get("/vmboxes")).status == 200


async def test_basic_auth_that_passes_keeps_passing(scene: Scene) -> None:
    """Each success clears the count: a Basic client is never slowed by its own requests."""
    for _ in range(3 * 5):
        assert (await scene.basic("right")).status == 200


async def test_wrong_api_keys_are_throttled(scene: Scene) -> None:
    for attempt in range(5):
        assert_error(await scene.api_auth(f"not-a-key-{attempt}"), 401, "invalid_credentials")
    retry_after = assert_throttled(await scene.api_auth(scene.account["pvt_api_key"]))
    scene.clock.now += retry_after
    assert (await scene.api_auth(scene.account["pvt_api_key"])).status == 201


async def test_a_validation_error_is_not_a_failure(scene: Scene) -> None:
    for _ in range(10):
        assert (await scene.send("PUT", "/v2/user_auth", data={"credentials": "short"})).status == 400
    assert (await scene.user_auth("right")).status == 201


# -- the counts themselves --------------------------------------------------------------

def failing(throttle: LoginThrottle, address: str, name: str) -> None:
    with pytest.raises(InvalidCredentials), throttle.attempt(address, [("name", name)]):
        raise InvalidCredentials()


def test_the_table_stays_bounded_with_100k_distinct_keys() -> None:
    throttle = LoginThrottle(5, 900.0, 60.0)
    started = time.perf_counter()
    for index in range(100_000):
        failing(throttle, f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}", f"account {index}")
        assert len(throttle) <= throttle.max_entries
    assert len(throttle) == throttle.max_entries
    assert time.perf_counter() - started < 30


def test_the_least_recently_used_keys_are_evicted_first() -> None:
    """A refused request counts as a use: a client that keeps trying stays in the table."""
    throttle = LoginThrottle(2, 900.0, 60.0, max_entries=4, clock=Clock())
    failing(throttle, "10.0.0.1", "target")
    failing(throttle, "10.0.0.1", "target")  # blocked
    failing(throttle, "10.0.0.2", "a")  # two more keys: the address and its account
    with pytest.raises(TooManyRequests):
        throttle.attempt("10.0.0.1", [("name", "target")]).__enter__()
    failing(throttle, "10.0.0.3", "b")  # evicts 10.0.0.2's keys, now the least recently used
    with pytest.raises(TooManyRequests):
        throttle.attempt("10.0.0.1", [("name", "target")]).__enter__()


def test_checks_running_at_once_count_against_the_limit() -> None:
    throttle = LoginThrottle(5, 900.0, 60.0)
    failing(throttle, "10.0.0.1", "target")
    running = [throttle.attempt("10.0.0.1", [("name", "target")]) for _ in range(4)]
    for attempt in running:
        attempt.__enter__()
    with pytest.raises(TooManyRequests) as refused:
        throttle.attempt("10.0.0.1", [("name", "target")]).__enter__()
    assert refused.value.headers["Retry-After"] == "1"


def test_the_wait_is_capped_by_backoff_max() -> None:
    clock = Clock()
    throttle = LoginThrottle(1, 10_000.0, 5.0, clock=clock)
    waits = []
    for _ in range(6):
        failing(throttle, "10.0.0.1", "target")
        with pytest.raises(TooManyRequests) as refused:
            throttle.attempt("10.0.0.1", [("name", "target")]).__enter__()
        waits.append(int(refused.value.headers["Retry-After"]))
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 5, 5, 5]


@pytest.mark.parametrize(("peer", "key"), [("192.0.2.7", "192.0.2.7"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
                                           ("::ffff:192.0.2.7", "192.0.2.7"), ("", "")])
def test_an_ipv6_client_counts_per_64(peer: str, key: str) -> None:
    assert address_key(peer) == key


def test_the_settings_come_from_the_environment() -> None:
    config = Config.from_env({"KAZOO_VM_AUTH_FAILURES": "0", "KAZOO_VM_AUTH_WINDOW": "60",
                              "KAZOO_VM_AUTH_BACKOFF_MAX": "300"})
    assert (config.auth_failures, config.auth_window, config.auth_backoff_max) == (0, 60.0, 300.0)
    assert (Config.from_env({}).auth_failures, Config.from_env({}).auth_backoff_max) == (5, 60.0)
