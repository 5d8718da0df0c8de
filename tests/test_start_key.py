"""Tests for kazoo_vm.kazoo.start_key (Kazoo-compatible next_start_key codec)."""

from __future__ import annotations

import base64
import contextlib
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kazoo_vm.kazoo.start_key import (
    MAX_DEPTH,
    JSONValue,
    StartKey,
    binary_to_term,
    decode_start_key,
    encode_start_key,
    term_to_binary,
)

KAZOO_DOC_KEY = "g2wAAAACbgUAvn1W1A5tAAAACDk4MDE2ODAwag"
KAZOO_DOC_BYTES = bytes(
    [131, 108, 0, 0, 0, 2, 110, 5, 0, 190, 125, 86, 212, 14, 109, 0, 0, 0, 8]
) + b"98016800" + bytes([106])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def same(a: object, b: object) -> bool:
    """Equality that also distinguishes 1 / 1.0 / True."""
    return a == b and repr(a) == repr(b)


json_values: st.SearchStrategy[JSONValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.integers(min_value=-300, max_value=300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=25,
)


# --- Kazoo documentation example ------------------------------------------------


def test_kazoo_doc_key_decodes_to_gregorian_seconds_and_string() -> None:
    assert decode_start_key(KAZOO_DOC_KEY) == StartKey(key=[63691980222, "98016800"])


def test_kazoo_doc_key_is_the_documented_term_bytes() -> None:
    assert unb64url(KAZOO_DOC_KEY) == KAZOO_DOC_BYTES
    assert binary_to_term(KAZOO_DOC_BYTES) == [63691980222, "98016800"]


def test_encoding_kazoo_doc_key_reproduces_kazoo_string() -> None:
    assert term_to_binary([63691980222, "98016800"]) == KAZOO_DOC_BYTES
    assert encode_start_key(StartKey(key=[63691980222, "98016800"])) == KAZOO_DOC_KEY


# --- exact encodings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, bytes([97, 0])),
        (255, bytes([97, 255])),
        (256, bytes([98, 0, 0, 1, 0])),
        (-1, bytes([98, 255, 255, 255, 255])),
        (2**31 - 1, bytes([98, 127, 255, 255, 255])),
        (-(2**31), bytes([98, 128, 0, 0, 0])),
        (2**31, bytes([110, 4, 0, 0, 0, 0, 128])),
        (-(2**31) - 1, bytes([110, 4, 1, 1, 0, 0, 128])),
        (63880000000, bytes([110, 5, 0]) + (63880000000).to_bytes(5, "little")),
    ],
)
def test_integers_use_the_smallest_erlang_integer_encoding(value: int, expected: bytes) -> None:
    assert term_to_binary(value) == bytes([131]) + expected


def test_huge_integer_uses_large_big_ext() -> None:
    value = -(2**2100)
    size = (value.bit_length() + 7) // 8
    expected = bytes([131, 111]) + struct.pack(">I", size) + bytes([1])
    assert term_to_binary(value) == expected + (2**2100).to_bytes(size, "little")


def test_float_uses_new_float_ext() -> None:
    assert term_to_binary(1.5) == bytes([131, 70]) + struct.pack(">d", 1.5)


def test_string_is_utf8_binary() -> None:
    assert term_to_binary("é") == bytes([131, 109, 0, 0, 0, 2, 0xC3, 0xA9])


@pytest.mark.parametrize(("value", "name"), [(None, b"null"), (True, b"true"), (False, b"false")])
def test_null_true_false_are_latin1_atom_ext(value: JSONValue, name: bytes) -> None:
    assert term_to_binary(value) == bytes([131, 100, 0, len(name)]) + name


def test_bool_is_encoded_as_atom_not_integer() -> None:
    assert term_to_binary([True, 1]) == bytes(
        [131, 108, 0, 0, 0, 2, 100, 0, 4]) + b"true" + bytes([97, 1, 106])


def test_empty_list_is_nil() -> None:
    assert term_to_binary([]) == bytes([131, 106])


def test_list_of_bytes_uses_string_ext_like_erlang() -> None:
    assert term_to_binary([1, 2, 255]) == bytes([131, 107, 0, 3, 1, 2, 255])


def test_empty_object_is_g2gBag() -> None:
    assert term_to_binary({}) == bytes([131, 104, 1, 106])
    assert encode_start_key(StartKey(key={})) == "g2gBag"


def test_object_is_one_tuple_of_proplist() -> None:
    assert term_to_binary({"a": 300}) == bytes(
        [131, 104, 1, 108, 0, 0, 0, 1, 104, 2, 109, 0, 0, 0, 1, 97, 98, 0, 0, 1, 44, 106]
    )


def test_docid_start_key_is_key_docid_two_tuple() -> None:
    data = unb64url(encode_start_key(StartKey(key=[1, "x"], docid="d1")))
    assert data == bytes([131, 104, 2]) + term_to_binary([1, "x"])[1:] + term_to_binary("d1")[1:]


def test_encoded_start_key_is_unpadded_base64url() -> None:
    text = encode_start_key(StartKey(key=["\xff\xfe" * 10, 2**64 - 1], docid="?>"))
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# --- round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0, 255, 256, -1, -256, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 63880000000,
        2**2100, -(2**2100), 0.0, -2.5, 1e300, 5e-324, "", "voicemail", "日本",
        [], [[]], [1, [2, [3, ["x"]]]], [300, 1], {}, {"a": 1, "b": [None, {"c": "d"}]},
        None, True, False,
    ],
)
def test_value_round_trips(value: JSONValue) -> None:
    assert same(binary_to_term(term_to_binary(value)), value)


@given(json_values)
def test_any_json_value_round_trips(value: JSONValue) -> None:
    assert same(binary_to_term(term_to_binary(value)), value)


@given(json_values, st.none() | st.text())
def test_any_start_key_round_trips(key: JSONValue, docid: str | None) -> None:
    decoded = decode_start_key(encode_start_key(StartKey(key, docid)))
    assert same(decoded.key, key) and decoded.docid == docid


def test_start_key_with_docid_round_trips() -> None:
    start = StartKey(key=[63691980222, "98016800"], docid="201901-abc")
    assert decode_start_key(encode_start_key(start)) == start


def test_kazoo_object_key_is_not_mistaken_for_docid_pair() -> None:
    assert decode_start_key("g2gBag") == StartKey(key={})


# --- decoding other Erlang encodings ---------------------------------------------


@pytest.mark.parametrize(
    "atom",
    [
        bytes([100, 0, 4]) + b"true",
        bytes([115, 4]) + b"true",
        bytes([118, 0, 4]) + b"true",
        bytes([119, 4]) + b"true",
    ],
)
def test_all_atom_encodings_decode(atom: bytes) -> None:
    assert binary_to_term(bytes([131]) + atom) is True


def test_utf8_atom_other_than_null_true_false_decodes_to_its_name() -> None:
    name = "señal".encode()
    assert binary_to_term(bytes([131, 119, len(name)]) + name) == "señal"


def test_string_ext_decodes_to_list_of_ints() -> None:
    assert binary_to_term(bytes([131, 107, 0, 3, 1, 2, 200])) == [1, 2, 200]


def test_legacy_float_ext_decodes() -> None:
    text = b"%.20e" % 1.5
    assert binary_to_term(bytes([131, 99]) + text.ljust(31, b"\0")) == 1.5


def test_large_tuple_object_decodes() -> None:
    assert binary_to_term(bytes([131, 105, 0, 0, 0, 1, 106])) == {}


# --- hostile input ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["not-base64!!", "", "g2", "g2gBag=x", "é", "\ud800", "g2wAAAAB"])
def test_garbage_start_key_is_the_raw_text(text: str) -> None:
    assert decode_start_key(text) == StartKey(key=text)


@given(st.text())
def test_decode_start_key_never_raises_on_text(text: str) -> None:
    assert isinstance(decode_start_key(text), StartKey)


@given(st.binary())
def test_decode_start_key_never_raises_on_encoded_random_bytes(data: bytes) -> None:
    assert isinstance(decode_start_key(b64url(data)), StartKey)


@given(st.binary())
def test_binary_to_term_raises_only_value_error(data: bytes) -> None:
    for candidate in (data, bytes([131]) + data):
        with contextlib.suppress(ValueError):
            binary_to_term(candidate)


def test_non_object_tuple_start_key_is_the_raw_text() -> None:
    text = b64url(bytes([131, 104, 3, 97, 1, 97, 2, 97, 3]))
    assert decode_start_key(text) == StartKey(key=text)


def test_pair_without_binary_docid_start_key_is_the_raw_text() -> None:
    text = b64url(bytes([131, 104, 2, 97, 1, 97, 2]))
    assert decode_start_key(text) == StartKey(key=text)


def test_binary_to_term_rejects_docid_pair() -> None:
    with pytest.raises(ValueError, match=r"^unsupported term \(tag 104\)$"):
        binary_to_term(unb64url(encode_start_key(StartKey(key=1, docid="d"))))


def nested(depth: int) -> bytes:
    return bytes([131]) + bytes([108, 0, 0, 0, 1]) * depth + bytes([106]) * (depth + 1)


def test_nesting_up_to_max_depth_decodes() -> None:
    value = binary_to_term(nested(MAX_DEPTH - 1))
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(value, list)
        value = value[0]
    assert value == []


def test_deep_nesting_hits_depth_limit() -> None:
    with pytest.raises(ValueError, match=f"^nested deeper than {MAX_DEPTH} levels$"):
        binary_to_term(nested(100_000))


def test_deep_object_nesting_hits_depth_limit() -> None:
    one = bytes([104, 1, 108, 0, 0, 0, 1, 104, 2, 109, 0, 0, 0, 0])
    for depth in (MAX_DEPTH + 1, 3 * MAX_DEPTH):
        with pytest.raises(ValueError, match="^nested deeper"):
            binary_to_term(bytes([131]) + one * depth + bytes([106, 104, 1, 106]) + bytes([106]) * depth)


def test_object_nesting_up_to_max_depth_decodes() -> None:
    one = bytes([104, 1, 108, 0, 0, 0, 1, 104, 2, 109, 0, 0, 0, 0])
    depth = MAX_DEPTH - 1
    value = binary_to_term(bytes([131]) + one * depth + bytes([104, 1, 106]) + bytes([106]) * depth)
    for _ in range(depth):
        assert isinstance(value, dict)
        value = value[""]
    assert value == {}


def nested_value(levels: int, *, objects: bool = False) -> JSONValue:
    """``levels`` containers, one inside the other (the innermost empty)."""
    value: JSONValue = {} if objects else []
    for _ in range(levels - 1):
        value = {"k": value} if objects else [value]
    return value


@pytest.mark.parametrize("objects", [False, True], ids=["lists", "objects"])
def test_encoding_up_to_max_depth_round_trips(objects: bool) -> None:
    value = nested_value(MAX_DEPTH, objects=objects)
    assert binary_to_term(term_to_binary(value)) == value
    with pytest.raises(ValueError, match="^nested deeper"):
        term_to_binary(nested_value(MAX_DEPTH + 1, objects=objects))
    with pytest.raises(ValueError, match="^nested deeper"):
        term_to_binary(nested_value(3 * MAX_DEPTH, objects=objects))
    start = StartKey(key=value, docid="201901-abc")
    assert decode_start_key(encode_start_key(start)) == start


def test_encoding_too_deep_value_raises_value_error() -> None:
    value: JSONValue = []
    for _ in range(MAX_DEPTH):
        value = [value]
    with pytest.raises(ValueError):
        term_to_binary(value)


def test_every_truncation_raises_value_error() -> None:
    data = term_to_binary([63691980222, "x", {"k": [1.5, None, -7, 300]}, 2**70])
    for end in range(len(data)):
        with pytest.raises(ValueError, match="^truncated term or length beyond end of data$"):
            binary_to_term(data[:end])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([131, 109, 255, 255, 255, 255, 0]), "truncated term or length beyond end of data"),
        (bytes([131, 108, 255, 255, 255, 255, 106]), "truncated term or length beyond end of data"),
        (bytes([131, 111, 255, 255, 255, 255, 0, 1]), "truncated term or length beyond end of data"),
        (bytes([131, 107, 0, 9, 1]), "truncated term or length beyond end of data"),  # STRING_EXT
    ],
)
def test_length_beyond_data_raises_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        binary_to_term(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([131, 97, 1, 0]), "trailing bytes after term"),
        (bytes([130, 97, 1]), r"not an external term \(bad version byte\)"),
        (bytes([131, 80, 0, 0, 0, 2, 120, 156]), r"unsupported term \(tag 80\)"),  # compressed
        (bytes([131, 88, 119, 1, 97, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), r"unsupported term \(tag 88\)"),  # pid
        (bytes([131, 116, 0, 0, 0, 0]), r"unsupported term \(tag 116\)"),  # map
        (bytes([131, 108, 0, 0, 0, 1, 97, 1, 97, 2]), "improper list"),
        (bytes([131, 109, 0, 0, 0, 1, 0xFF]), "'utf-8' codec can't decode.*"),
        (bytes([131, 110, 1, 2, 1]), "bad bignum sign"),
        (bytes([131, 70]) + struct.pack(">d", float("nan")), "non-finite float"),
        (bytes([131, 99]) + b"nan".ljust(31, b"\0"), "bad FLOAT_EXT"),  # FLOAT_EXT text not a number
        (bytes([131, 99]) + b"1_0".ljust(31, b"\0"), "bad FLOAT_EXT"),  # Python reads it; Erlang does not
        (bytes([131, 99]) + b" 1.5".ljust(31, b"\0"), "bad FLOAT_EXT"),
        (bytes([131, 99]) + bytes(31), "bad FLOAT_EXT"),  # no text
        (bytes([131, 104, 1, 108, 0, 0, 0, 1, 97, 1, 106]), "object member is not a 2-tuple"),
        (bytes([131, 104, 1, 100, 0, 0]), "expected a list"),  # object without proplist
        (bytes([131, 104, 1, 108, 0, 0, 0, 1, 104, 2, 97, 1, 97, 1, 106]), "expected a binary"),  # key not binary
    ],
)
def test_malformed_or_unsupported_term_raises_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        binary_to_term(data)


@pytest.mark.parametrize(
    ("value", "message"),
    [((1, 2), "tuple is not a JSON value"), ({1: "a"}, "object key 1 is not a str"),
     ({"a": {2}}, "set is not a JSON value"), (float("nan"), "non-finite float nan is not a JSON value"),
     (float("inf"), "non-finite float inf is not a JSON value"), (b"x", "bytes is not a JSON value"),
     (object(), "object is not a JSON value"), ("\ud800", "string is not encodable as UTF-8")],
)
def test_non_json_value_raises_type_error(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{message}$"):
        term_to_binary(value)  # type: ignore[arg-type]


def test_non_str_docid_raises_type_error() -> None:
    with pytest.raises(TypeError, match="^docid must be a str$"):
        encode_start_key(StartKey(key=1, docid=5))  # type: ignore[arg-type]


# --- boundaries of Erlang's encodings ----------------------------------------------


@pytest.mark.parametrize(("value", "tag", "size_bytes"), [
    (2**(8 * 127), 110, bytes([128])),  # SMALL_BIG_EXT: size in one unsigned byte
    (2**(8 * 255) - 1, 110, bytes([255])),
    (-(2**(8 * 255) - 1), 110, bytes([255])),
    (2**(8 * 255), 111, struct.pack(">I", 256)),  # LARGE_BIG_EXT from 256 bytes on
])
def test_bignum_size_boundaries(value: int, tag: int, size_bytes: bytes) -> None:
    size = (abs(value).bit_length() + 7) // 8
    assert term_to_binary(value) == (bytes([131, tag]) + size_bytes + bytes([value < 0])
                                     + abs(value).to_bytes(size, "little"))
    assert binary_to_term(term_to_binary(value)) == value


@pytest.mark.parametrize("value", [[0], [0, 0], [255, 0, 1], [0] * 40000, [7] * 0xFFFF])
def test_byte_lists_holding_0_or_long_use_string_ext(value: list[int]) -> None:
    assert term_to_binary(value) == bytes([131, 107]) + struct.pack(">H", len(value)) + bytes(value)  # type: ignore[arg-type]
    assert binary_to_term(term_to_binary(value)) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [[7] * 0x10000, [0, 256], [-1, 0]])
def test_lists_of_more_than_bytes_use_list_ext(value: list[int]) -> None:
    data = term_to_binary(value)  # type: ignore[arg-type]
    assert data[:6] == bytes([131, 108]) + struct.pack(">I", len(value))
    assert binary_to_term(data) == value


def test_latin1_atom_decodes_to_its_name() -> None:
    assert binary_to_term(bytes([131, 100, 0, 3]) + "été".encode("latin-1")) == "été"
    assert binary_to_term(bytes([131, 115, 3]) + "été".encode("latin-1")) == "été"


def test_next_start_key_ending_in_x_is_not_cut_short() -> None:
    """About one key in 64 encodes to text ending in X (or another letter): only the
    padding is stripped."""
    ending: dict[str, str] = {}
    for key in [f"ab{chr(code)}" for code in range(32, 127)] + [f"box {number}" for number in range(200)]:
        text = encode_start_key(StartKey(key=key))
        ending.setdefault(text[-1], text)
    for text in ending.values():
        assert decode_start_key(text).key == binary_to_term(unb64url(text))
        assert unb64url(text) == term_to_binary(decode_start_key(text).key)
    assert {"X", "=", "Y"} & set(ending) == {"X", "Y"}


def test_start_key_with_characters_outside_base64url_is_the_raw_text() -> None:
    encoded = encode_start_key(StartKey(key="box 1"))
    text = encoded[:4] + "****" + encoded[4:]
    assert decode_start_key(text) == StartKey(key=text)


# --- differential check against real Erlang (skipped without erl) -----------------


def erlang_literal(value: JSONValue) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if isinstance(value, float) and "." not in mantissa:
            text = mantissa + ".0" + ("e" + exponent if exponent else "")
        return text
    if isinstance(value, str):
        return "<<" + ",".join(str(b) for b in value.encode()) + ">>"
    if isinstance(value, list):
        return "[" + ",".join(erlang_literal(v) for v in value) + "]"
    pairs = (f"{{{erlang_literal(k)},{erlang_literal(v)}}}" for k, v in value.items())
    return "{[" + ",".join(pairs) + "]}"


def random_json(rng: random.Random, depth: int = 0) -> JSONValue:
    kind = rng.randrange(9 if depth < 4 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-300, 300)
    if kind == 2:
        return rng.choice([1, -1]) * rng.randrange(2 ** rng.randrange(1, 600))
    if kind == 3:
        return rng.choice([1.0, -1.0]) * rng.random() * 10.0 ** rng.randint(-300, 300)
    if kind in (4, 5):
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(128, 0xD7FF)]))
                       for _ in range(rng.randrange(8)))
    if kind == 6:
        return [rng.randrange(256) for _ in range(rng.randrange(5))]
    if kind == 7:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(rng.randrange(99)): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


@pytest.mark.skipif(shutil.which("erl") is None, reason="Erlang not installed")
def test_encoding_matches_erlang_term_to_binary(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    values: list[JSONValue] = [[63691980222, "98016800"], {}, [], [1, 2, 3]]
    values += [random_json(rng) for _ in range(300)]
    terms = tmp_path / "terms.txt"
    terms.write_text("".join(erlang_literal(v) + ".\n" for v in values))
    script = (
        f'{{ok, Ts}} = file:consult("{terms}"), '
        "[io:format(\"~s~n\", [base64:encode(term_to_binary(T, [{minor_version, 1}]))]) || T <- Ts], "
        "halt()."
    )
    result = subprocess.run(["erl", "-noshell", "-eval", script], capture_output=True, cwd=tmp_path,
                            text=True, timeout=120, check=True)
    expected = [base64.b64decode(line) for line in result.stdout.split()]
    assert len(expected) == len(values), result.stderr or result.stdout[:500]
    for value, erlang_bytes in zip(values, expected, strict=False):
        assert term_to_binary(value) == erlang_bytes, value
