"""The non-voicemail endpoints Monster UI needs before its Voicemails app opens
(clients.md §1.2, §2.5): account, users, token info, apps store, and Kazoo's 404s."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api, assert_error, make_account, stored_doc

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services

Client = TestClient[web.Request, web.Application]
UI_METADATA = {"version": "4.3.0", "ui": "monster-ui", "origin": "auth"}


def md5_credentials(username: str, password: str) -> str:
    return hashlib.md5(f"{username.lower()}:{password}".encode()).hexdigest()


async def user_login(client: Client, account: dict[str, Any], username: str, password: str) -> Any:
    """Monster's login (by account name when given, else by the account's unique realm:
    every test account is called "Test Account")."""
    lookup = {"account_name": account["name"]} if "realm" not in account else {"account_realm": account["realm"]}
    body = {"data": {"credentials": md5_credentials(username, password), **lookup}}
    async with client.put("/v2/user_auth", json=body, headers={"X-Auth-Token": "undefined"}) as response:
        assert response.status == 201, await response.text()
        return await response.json()


@pytest.fixture
async def user(services: Services, account: dict[str, Any]) -> dict[str, Any]:
    # A username of its own: other test files log in by the shared account name "Test Account".
    return await services.users.create(account["_id"], username="vmui.alice", password="vmui-secret",
                                       first_name="Alice", last_name="Smith", email="alice@example.com")


@pytest.fixture
async def user_api(client: Client, account: dict[str, Any], user: dict[str, Any]) -> Api:
    login = await user_login(client, account, "vmui.alice", "vmui-secret")
    return Api(client, account["_id"], str(login["auth_token"]))


def no_private_keys(data: dict[str, Any]) -> bool:
    return not [key for key in data if key.startswith("pvt_") or (key.startswith("_") and key != "_read_only")]


# -- the account ---------------------------------------------------------------------------

async def test_get_account_shows_public_fields_and_what_crossbar_leaks(api: Api, account: dict[str, Any]) -> None:
    reply = await api.get("")
    assert reply.status == 200, reply.body
    data = reply.data
    assert data["id"] == account["_id"]
    assert data["name"] == account["name"]
    assert data["realm"] == account["realm"]
    assert data["enabled"] is True
    assert data["is_reseller"] is False
    assert data["reseller_id"] == account["_id"]
    assert data["created"] == account["pvt_created"]
    assert no_private_keys(data)
    assert reply.json["revision"] == reply.headers["ETag"].strip('"')


async def test_get_account_needs_a_token_and_the_right_account(api: Api, services: Services) -> None:
    assert_error(await api.get("", token=""), 401, "invalid_credentials")
    other = await make_account(services, name="Someone Else")
    assert_error(await api.get(f"/v2/accounts/{other['_id']}"), 403, "forbidden")
    assert_error(await api.get(f"/v2/accounts/{'a' * 32}"), 404, "bad_identifier")
    child = await make_account(services, name="Child", parent_id=api.account_id)
    reply = await api.get(f"/v2/accounts/{child['_id']}")
    assert reply.status == 200
    assert reply.data["reseller_id"] == api.account_id


async def test_post_account_adds_ui_restrictions_in_both_copies(api: Api, services: Services,
                                                                account: dict[str, Any]) -> None:
    """Monster's myaccount: GET the account, POST it back whole with ui_restrictions."""
    fetched = (await api.get("")).data
    restrictions = {"myaccount": {"user": {"show_tab": True}, "billing": {"show_tab": False}}}
    reply = await api.post("", {**fetched, "ui_restrictions": restrictions, "ui_metadata": UI_METADATA})
    assert reply.status == 200, reply.body
    assert reply.data["ui_restrictions"] == restrictions
    assert reply.data["name"] == account["name"]
    account_db = naming.account_db(account["_id"])
    own = await stored_doc(services, account_db, account["_id"])
    mirror = await stored_doc(services, naming.ACCOUNTS_DB, account["_id"])
    assert reply.json["revision"] == own["_rev"]
    for doc in (own, mirror):
        assert doc["ui_restrictions"] == restrictions
        assert doc["pvt_api_key"] == account["pvt_api_key"]
        assert doc["pvt_tree"] == account["pvt_tree"]
        assert doc["pvt_type"] == "account"
        for leaked in ("id", "created", "enabled", "is_reseller", "reseller_id", "superduper_admin"):
            assert leaked not in doc
    assert {key: value for key, value in own.items() if key != "_rev"} == {
        key: value for key, value in mirror.items() if key != "_rev"}
    again = await api.get("")
    assert again.data["ui_restrictions"] == restrictions


async def test_post_account_rename_keeps_logins_by_name_working(client: Client, api: Api, services: Services,
                                                                user: dict[str, Any],
                                                                account: dict[str, Any]) -> None:
    fetched = (await api.get("")).data
    new_name = f"Renamed Corp {account['_id'][:8]}"
    reply = await api.post("", {**fetched, "name": new_name})
    assert reply.status == 200, reply.body
    login = await user_login(client, {"name": new_name}, "vmui.alice", "vmui-secret")
    assert login["data"]["account_id"] == account["_id"]
    assert login["data"]["account_name"] == new_name


async def test_post_account_is_validated(api: Api, services: Services, account: dict[str, Any]) -> None:
    errors = assert_error(await api.post("", {"realm": "a b", "timezone": "UTC"}), 400, "validation error")
    assert set(errors) == {"name", "realm", "timezone"}
    assert "required" in errors["name"]
    other = await make_account(services, name="Other", realm="taken.example.com")
    errors = assert_error(await api.post("", {"name": account["name"], "realm": other["realm"]}),
                          400, "validation error")
    assert "unique" in errors["realm"]
    assert_error(await api.post("", ["not", "an", "object"]), 400, "validation error")


# -- users -------------------------------------------------------------------------------

async def test_users_listing_sorted_by_last_then_first_name(api: Api, services: Services,
                                                            account: dict[str, Any]) -> None:
    await services.users.create(account["_id"], username="vmui.zed", password="pw", first_name="Zed", last_name="Adams")
    await services.users.create(account["_id"], username="vmui.amy", password="pw", first_name="Amy", last_name="Young")
    await services.users.create(account["_id"], username="vmui.bob", password="pw", first_name="Bob", last_name="Adams")
    await services.vmboxes.save(account["_id"], {"_id": "b" * 32, "pvt_type": "vmbox", "name": "not a user",
                                                 "mailbox": "100"})
    reply = await api.get("/users", params={"paginate": "false", "_": "1700000000000"})
    assert reply.status == 200, reply.body
    assert [(row["first_name"], row["last_name"]) for row in reply.data] == [
        ("Bob", "Adams"), ("Zed", "Adams"), ("Amy", "Young")]
    for row in reply.data:
        assert no_private_keys(row)
        assert row["flags"] == [] and row["features"] == []
        assert len(row["id"]) == 32


async def test_users_listing_of_many_users_reads_every_batch(api: Api, services: Services,
                                                             account: dict[str, Any]) -> None:
    from kazoo_vm.storage import accounts as storage_accounts

    batch = storage_accounts.LISTING_BATCH
    storage_accounts.LISTING_BATCH = 2
    try:
        for index in range(5):
            await services.users.create(account["_id"], username=f"vmui.u{index}", password="pw",
                                        first_name=f"F{index}", last_name="L")
        reply = await api.get("/users")
    finally:
        storage_accounts.LISTING_BATCH = batch
    assert sorted(row["username"] for row in reply.data) == [f"vmui.u{index}" for index in range(5)]


async def test_get_user_shows_public_fields(user_api: Api, user: dict[str, Any]) -> None:
    reply = await user_api.get(f"/users/{user['_id']}")
    assert reply.status == 200, reply.body
    assert reply.data["id"] == user["_id"]
    assert (reply.data["first_name"], reply.data["last_name"]) == ("Alice", "Smith")
    assert reply.data["priv_level"] == "admin"
    assert no_private_keys(reply.data)


async def test_unknown_or_malformed_user_is_404(user_api: Api) -> None:
    assert_error(await user_api.get(f"/users/{'c' * 32}"), 404, "bad_identifier")
    assert_error(await user_api.get("/users/..%2Fsecret"), 404, "bad_identifier")


async def test_a_vmbox_is_not_a_user(api: Api, vmbox: dict[str, Any]) -> None:
    assert_error(await api.get(f"/users/{vmbox['id']}"), 404, "bad_identifier")


async def test_patch_user_app_list_echoes_and_keeps_private_fields(user_api: Api, services: Services,
                                                                   user: dict[str, Any],
                                                                   account: dict[str, Any]) -> None:
    reply = await user_api.patch(f"/users/{user['_id']}", {"appList": ["app1"], "ui_metadata": UI_METADATA})
    assert reply.status == 200, reply.body
    assert reply.data["appList"] == ["app1"]
    assert reply.data["first_name"] == "Alice"
    stored = await stored_doc(services, naming.account_db(account["_id"]), user["_id"])
    assert stored["appList"] == ["app1"]
    assert stored["pvt_md5_auth"] == user["pvt_md5_auth"]
    assert stored["pvt_type"] == "user"
    assert stored["_rev"] == reply.json["revision"]
    assert stored["pvt_modified"] >= user["pvt_modified"]


async def test_patch_user_null_removes_a_key(user_api: Api, user: dict[str, Any]) -> None:
    reply = await user_api.patch(f"/users/{user['_id']}", {"email": None})
    assert reply.status == 200, reply.body
    assert "email" not in reply.data


async def test_patch_user_is_judged_by_what_it_changes(api: Api, services: Services,
                                                       account: dict[str, Any]) -> None:
    """A stored user without a last name (as ``users create`` writes by default) may
    still get its app list updated; setting a bad value is refused."""
    nameless = await services.users.create(account["_id"], username="vmui.nolast", password="pw")
    assert nameless["last_name"] == ""
    assert (await api.patch(f"/users/{nameless['_id']}", {"appList": ["x"]})).status == 200
    errors = assert_error(await api.patch(f"/users/{nameless['_id']}", {"last_name": "", "priv_level": "root"}),
                          400, "validation error")
    assert set(errors) == {"last_name", "priv_level"}


async def test_post_user_replaces_what_monster_sends_back(user_api: Api, services: Services,
                                                          user: dict[str, Any], account: dict[str, Any]) -> None:
    """Monster's ``user.update`` after the first-use walkthrough: the fetched user with
    ``ui_flags`` set. A stored empty last name sent back unchanged is not judged; keys
    left out are removed; private fields stay."""
    db = naming.account_db(account["_id"])
    doc = await stored_doc(services, db, user["_id"])
    doc["last_name"] = ""
    await services.store.couch.put_doc(db, doc)
    fetched = (await user_api.get(f"/users/{user['_id']}")).data
    fetched.pop("email")
    body = {**fetched, "ui_flags": {"monster": {"showfirstUseWalkthrough": False}}, "ui_metadata": UI_METADATA}
    reply = await user_api.post(f"/users/{user['_id']}", body)
    assert reply.status == 200, reply.body
    assert reply.data["ui_flags"] == {"monster": {"showfirstUseWalkthrough": False}}
    assert "email" not in reply.data
    stored = await stored_doc(services, db, user["_id"])
    assert stored["pvt_md5_auth"] == user["pvt_md5_auth"] and "email" not in stored
    errors = assert_error(await user_api.post(f"/users/{user['_id']}", {**fetched, "first_name": None}),
                          400, "validation error")
    assert "required" in errors["first_name"]
    errors = assert_error(await user_api.post(f"/users/{user['_id']}", {**fetched, "priv_level": "root"}),
                          400, "validation error")
    assert set(errors) == {"priv_level"}


async def test_patch_user_password_stores_only_hashes(client: Client, user_api: Api, services: Services,
                                                      user: dict[str, Any], account: dict[str, Any]) -> None:
    reply = await user_api.patch(f"/users/{user['_id']}", {"password": "n3w"})
    assert reply.status == 200, reply.body
    assert "password" not in reply.data
    stored = await stored_doc(services, naming.account_db(account["_id"]), user["_id"])
    assert "password" not in stored
    assert stored["pvt_md5_auth"] == md5_credentials("vmui.alice", "n3w")
    assert stored["pvt_sha1_auth"] == hashlib.sha1(b"vmui.alice:n3w").hexdigest()
    await user_login(client, account, "vmui.alice", "n3w")


async def test_patch_username_needs_the_password_and_must_be_unique(client: Client, user_api: Api,
                                                                    services: Services, user: dict[str, Any],
                                                                    account: dict[str, Any]) -> None:
    errors = assert_error(await user_api.patch(f"/users/{user['_id']}", {"username": "alice2"}),
                          400, "validation error")
    assert "required" in errors["password"]
    await services.users.create(account["_id"], username="vmui.taken", password="pw")
    errors = assert_error(await user_api.patch(f"/users/{user['_id']}", {"username": "VMUI.Taken", "password": "pw"}),
                          400, "validation error")
    assert "unique" in errors["username"]
    reply = await user_api.patch(f"/users/{user['_id']}", {"username": "Alice.New", "password": "pw2"})
    assert reply.status == 200, reply.body
    assert reply.data["username"] == "alice.new"
    await user_login(client, account, "alice.new", "pw2")


async def test_users_of_another_account_are_403(user_api: Api, services: Services) -> None:
    other = await make_account(services, name="Elsewhere")
    stranger = await services.users.create(other["_id"], username="vmui.eve", password="pw")
    assert_error(await user_api.get(f"/v2/accounts/{other['_id']}/users"), 403, "forbidden")
    assert_error(await user_api.patch(f"/v2/accounts/{other['_id']}/users/{stranger['_id']}", {"appList": []}),
                 403, "forbidden")


# -- token info ---------------------------------------------------------------------------

async def test_tokeninfo_answers_like_user_auth_without_a_token_header(user_api: Api, user: dict[str, Any],
                                                                      account: dict[str, Any]) -> None:
    reply = await user_api.post("/v2/auth/tokeninfo", {"token": user_api.token}, token="")
    assert reply.status == 200, reply.body
    data = reply.data
    assert (data["account_id"], data["owner_id"]) == (account["_id"], user["_id"])
    for key in ("is_reseller", "reseller_id", "language", "apps", "account_name"):
        assert key in data
    assert reply.json["auth_token"] == user_api.token
    by_get = await user_api.get("/v2/auth/tokeninfo", token="", params={"token": str(user_api.token)})
    assert by_get.status == 200
    assert by_get.data["owner_id"] == user["_id"]


async def test_tokeninfo_of_an_api_token_has_no_owner(api: Api) -> None:
    reply = await api.post("/v2/auth/tokeninfo", {"token": api.token}, token="")
    assert reply.status == 200, reply.body
    assert "owner_id" not in reply.data


async def test_tokeninfo_refuses_bad_or_missing_tokens(api: Api) -> None:
    assert_error(await api.post("/v2/auth/tokeninfo", {"token": "a.b.c"}, token=""), 401, "invalid_credentials")
    data = assert_error(await api.post("/v2/auth/tokeninfo", {}, token=""), 404, "missing token in request")
    assert data == {"message": "missing token in request"}


# -- apps store ---------------------------------------------------------------------------

async def test_apps_store_lists_voicemails_and_webhooks_for_all_users(user_api: Api, client: Client) -> None:
    reply = await user_api.get("/apps_store")
    assert reply.status == 200, reply.body
    assert [app["name"] for app in reply.data] == ["voicemails", "webhooks"]
    labels = [app["i18n"]["en-US"]["label"] for app in reply.data]
    assert labels == ["Voicemails", "Webhooks"]
    for app in reply.data:
        assert app["allowed_users"] == "all"
        assert app["users"] == []
        assert len(app["id"]) == 32 and int(app["id"], 16) >= 0
        assert app["api_url"] == f"http://{client.host}:{client.port}/v2/"
    assert reply.data[0]["id"] != reply.data[1]["id"]
    again = await user_api.get("/apps_store")
    assert [app["id"] for app in again.data] == [app["id"] for app in reply.data]


async def test_apps_store_api_url_follows_the_reverse_proxy(user_api: Api) -> None:
    reply = await user_api.get("/apps_store", headers={"X-Forwarded-Proto": "https",
                                                       "X-Forwarded-Host": "pbx.example.com",
                                                       "X-Forwarded-Prefix": "/api"})
    assert reply.data[0]["api_url"] == "https://pbx.example.com/api/v2/"
    odd = await user_api.get("/apps_store", headers={"X-Forwarded-Proto": "javascript",
                                                     "X-Forwarded-Host": "evil.example.com/<x>"})
    assert odd.data[0]["api_url"].startswith("http://127.0.0.1:")


# -- myaccount's badges (an error there opens Monster's "Oops" dialog at every boot) ----------

async def test_ledgers_total_is_a_zero_balance(user_api: Api) -> None:
    assert_error(await user_api.get("/ledgers/total", token=""), 401, "invalid_credentials")
    reply = await user_api.get("/ledgers/total")
    assert reply.status == 200, reply.body
    assert reply.data == {"amount": 0}


async def test_limits_are_kazoos_defaults_or_the_stored_document(user_api: Api, services: Services,
                                                                 account: dict[str, Any]) -> None:
    reply = await user_api.get("/limits")
    assert reply.status == 200, reply.body
    assert reply.data == {"id": "limits", "allow_prepay": True, "inbound_trunks": 0, "outbound_trunks": 0,
                          "twoway_trunks": 0}
    await services.store.couch.put_doc(naming.account_db(account["_id"]), {
        "_id": "limits", "pvt_type": "limits", "outbound_trunks": 5, "allow_prepay": False})
    stored = await user_api.get("/limits")
    assert stored.data["outbound_trunks"] == 5 and stored.data["allow_prepay"] is False
    assert stored.data["twoway_trunks"] == 0
    assert no_private_keys(stored.data)


# -- what kazoo_vm does not have ---------------------------------------------------------------

ACCOUNT_404S = ["/external_numbers", "/alerts", "/storage", "/cdrs/202401-abcdef0123456789"]


@pytest.mark.parametrize("path", ACCOUNT_404S)
async def test_missing_account_resources_are_kazoo_404s_after_auth(api: Api, services: Services, path: str) -> None:
    assert_error(await api.get(path, token=""), 401, "invalid_credentials")
    other = await make_account(services, name="Not Mine")
    assert_error(await api.get(f"/v2/accounts/{other['_id']}{path}"), 403, "forbidden")
    reply = await api.get(path, params={"_": "1700000000000"})
    assert assert_error(reply, 404, "not_found") == {"message": "not found"}


@pytest.mark.parametrize("path", ["/v2/whitelabel/127.0.0.1", "/v2/whitelabel/127.0.0.1/logo",
                                  "/v2/whitelabel/ui.example.com/icon"])
async def test_whitelabel_is_a_404_without_a_token(api: Api, path: str) -> None:
    for token in ("", "undefined"):
        reply = await api.get(path, token=token)
        assert assert_error(reply, 404, "not_found") == {"message": "not found"}


async def test_app_icon_is_a_404_even_from_an_img_tag(api: Api) -> None:
    reply = await api.get("/apps_store/0123456789abcdef0123456789abcdef/icon", token="",
                          params={"auth_token": str(api.token)}, headers={"Accept": "image/*"})
    assert assert_error(reply, 404, "not_found") == {"message": "not found"}


async def test_preflight_of_the_new_paths_is_answered_without_auth(client: Client, api: Api) -> None:
    for path in ("", "/users/" + "d" * 32, "/apps_store", "/alerts", "/ledgers/total", "/limits"):
        headers = {"Origin": "http://ui.example.com", "Access-Control-Request-Method": "PATCH",
                   "Access-Control-Request-Headers": "content-type,x-auth-token"}
        async with client.options(api.url(path), headers=headers) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"


# -- the whole boot, as Monster UI runs it ---------------------------------------------------

async def test_monster_boot_sequence_then_the_voicemails_app(client: Client, services: Services,
                                                            account: dict[str, Any], user: dict[str, Any]) -> None:
    """clients.md §1.2 then §1.3, in order, with Monster's headers and bodies."""
    anonymous = Api(client, account["_id"], None)
    assert (await anonymous.get("/v2/whitelabel/localhost", token="undefined")).status == 404
    login = await user_login(client, account, "vmui.alice", "vmui-secret")
    token, owner = str(login["auth_token"]), login["data"]["owner_id"]
    assert token.count(".") == 2 and owner == user["_id"]
    ui = Api(client, account["_id"], token)
    assert (await ui.get("/external_numbers")).status == 404
    assert (await ui.get("")).data["name"] == account["name"]
    me = (await ui.get(f"/users/{owner}")).data
    apps = (await ui.get("/apps_store")).data
    app_ids = [app["id"] for app in apps if app["name"] == "voicemails"]
    patched = await ui.patch(f"/users/{owner}", {"appList": app_ids, "ui_metadata": UI_METADATA})
    assert patched.status == 200 and patched.data["appList"] == app_ids
    assert "ui_restrictions" not in (await ui.get("")).data
    account_doc = (await ui.get("")).data
    saved = await ui.post("", {**account_doc, "ui_restrictions": {"myaccount": {}},
                               "ui_metadata": {**UI_METADATA, "origin": "myaccount"}})
    assert saved.status == 200, saved.body
    assert (await ui.get("/ledgers/total")).status == 200
    assert (await ui.get("/limits")).status == 200
    assert (await ui.get("/alerts")).status == 404
    assert (await ui.get("/storage")).status == 404
    assert (await ui.get("/vmboxes", params={"paginate": "false"})).status == 200
    reloaded = await ui.post("/v2/auth/tokeninfo", {"token": token}, token="")
    assert reloaded.data["owner_id"] == me["id"]


async def test_writes_are_stamped_with_who_made_them(api: Api, user_api: Api, services: Services,
                                                     account: dict[str, Any], user: dict[str, Any]) -> None:
    """crossbar's ``pvt_auth_*`` stamps: the account of the token, and its user when it has one."""
    db = naming.account_db(account["_id"])
    by_key = await api.put("/vmboxes", {"name": "By key", "mailbox": "3000"})
    by_user = await user_api.put("/vmboxes", {"name": "By user", "mailbox": "3001"})
    assert (by_key.status, by_user.status) == (201, 201), (by_key.body, by_user.body)
    key_doc = await stored_doc(services, db, by_key.data["id"])
    user_doc = await stored_doc(services, db, by_user.data["id"])
    assert (key_doc["pvt_is_authenticated"], key_doc["pvt_auth_account_id"]) == (True, account["_id"])
    assert "pvt_auth_user_id" not in key_doc
    assert (user_doc["pvt_auth_account_id"], user_doc["pvt_auth_user_id"]) == (account["_id"], user["_id"])
    assert (user_doc["pvt_alphanum_name"], user_doc["pvt_type"]) == ("byuser", "vmbox")
