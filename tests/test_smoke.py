from conftest import Api


async def test_new_account_lists_no_boxes(api: Api) -> None:
    reply = await api.get("/vmboxes")
    assert reply.status == 200
    assert reply.data == []
