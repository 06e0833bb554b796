"""Codec round trips for every kind and dtype, and the checks that turn bad input into counted drops."""
import warnings

import msgpack
import numpy as np
import pytest

from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode, encode
from magicmask.protocol.messages import DTYPES, ProtocolError, validate

LIMIT = 1 << 20


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip_every_dtype(dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    msg = decode(encode(M.HEARTBEAT, {"role": "x"}, {"a": arr, "empty": np.zeros((0, 3), dtype)}), LIMIT)
    assert msg.arrays["a"].dtype == arr.dtype and np.array_equal(msg.arrays["a"], arr)
    assert msg.arrays["empty"].shape == (0, 3)


def _fragment(T=3, E=2, A=4, obs=(5,)):
    arrays = {}
    for name, (dtype, shape) in M.SCHEMAS[M.FRAGMENT].arrays.items():
        dims = []
        for s in shape:
            dims.extend(obs if s == "*obs" else [s if type(s) is int else {"T": T, "E": E, "A": A}[s]])
        arrays[name] = np.zeros(dims, "float32" if dtype == "obs_dtype" else dtype)
    return {"episodes": [{"return": 1.0}], "env_steps": 6, "eval": {}}, arrays


def _examples():
    K = 8
    rep = {"keys": np.ones((3, K), np.float32), "scores": np.ones(3, np.float32),
           "steps": np.arange(3, dtype=np.int64), "positions": np.arange(3, dtype=np.int32)}
    snap = {"keys": np.ones((2, K), np.float32), "scores": np.ones(2, np.float32), "finders": np.array([[1], [3]], np.uint8)}
    return {
        M.FRAGMENT: _fragment(),
        M.REPORT: ({"env_steps": 50}, rep),
        M.SNAPSHOT: ({"created_at": 1.0, "clock": 50, "receiver": 0}, snap),
        M.WEIGHTS: ({"target": 0}, {"policy.0.weight": np.ones((5, 4), np.float32)}),
        M.HEARTBEAT: ({"role": "actor"}, {}),
        M.STOP: ({"reason": "done"}, {}),
    }


CTX = {"T": 3, "E": 2, "A": 4, "obs": (5,), "obs_dtype": "float32", "K": 8}


@pytest.mark.parametrize("kind", M.KINDS)
def test_roundtrip_every_kind_validates(kind):
    body, arrays = _examples()[kind]
    s = Sender(agent=2)
    msg = validate(decode(s.pack(kind, body, arrays, policy_version=7), LIMIT), CTX)
    assert (msg.kind, msg.agent, msg.seq, msg.policy_version, msg.incarnation) == (kind, 2, 1, 7, s.incarnation)
    for k, v in arrays.items():
        assert np.array_equal(msg.arrays[k], v)


def test_sequence_numbers_increase_per_sender():
    s = Sender(agent=0)
    seqs = [decode(s.pack(M.HEARTBEAT, {"role": "a"}), LIMIT).seq for _ in range(3)]
    assert seqs == [1, 2, 3]


@pytest.mark.parametrize("frames,cause", [
    ([b"\xc1garbage"], "malformed"),
    ([], "malformed"),
    ([msgpack.packb([1, 2, 3])], "malformed"),
    ([msgpack.packb({"v": 99, "k": "Heartbeat"})], "version"),
    ([b"x" * (LIMIT + 1)], "oversized"),
])
def test_bad_frames_raise_protocol_error(frames, cause):
    with pytest.raises(ProtocolError) as e:
        decode(frames, LIMIT)
    assert e.value.cause == cause


def test_truncated_array_frame_is_malformed():
    frames = encode(M.HEARTBEAT, {"role": "x"}, {"a": np.ones(10, np.float32)})
    frames[1] = bytes(frames[1])[:-3]
    with pytest.raises(ProtocolError, match="malformed"):
        decode(frames, LIMIT)


def test_missing_array_frame_is_malformed():
    frames = encode(M.HEARTBEAT, {"role": "x"}, {"a": np.ones(10, np.float32)})
    with pytest.raises(ProtocolError, match="malformed"):
        decode(frames[:1], LIMIT)


def test_a_shape_whose_size_wraps_round_in_int64_is_malformed():
    """2**62 x 2**62 elements make 0 in int64 arithmetic, which an empty frame would have matched."""
    frames = encode(M.HEARTBEAT, {"role": "x"}, {"a": np.ones(2, np.float32)})
    h = msgpack.unpackb(frames[0])
    h["x"][0][2] = [2**62, 2**62]
    with pytest.raises(ProtocolError) as e:
        decode([msgpack.packb(h), b""], LIMIT)
    assert e.value.cause == "malformed"


def test_wrong_version_message_names_the_versions():
    frames = encode(M.HEARTBEAT, {"role": "x"})
    h = msgpack.unpackb(frames[0])
    h["v"] = M.PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match=f"speaks {M.PROTOCOL_VERSION}"):
        decode([msgpack.packb(h)], LIMIT)


def test_pickle_dtype_refused_on_send_and_receive():
    with pytest.raises(ValueError):
        encode(M.HEARTBEAT, {"role": "x"}, {"a": np.array([object()], dtype=object)})
    frames = encode(M.HEARTBEAT, {"role": "x"}, {"a": np.ones(2, np.float32)})
    h = msgpack.unpackb(frames[0])
    h["x"][0][1] = "object"
    with pytest.raises(ProtocolError, match="malformed"):
        decode([msgpack.packb(h), frames[1]], LIMIT)


def test_arrays_in_foreign_byte_order_are_refused_on_send():
    """The receiver rebuilds arrays in its native order, so a big-endian array would arrive as other numbers."""
    with pytest.raises(ValueError, match="native byte order"):
        encode(M.HEARTBEAT, {"role": "x"}, {"a": np.ones(2, ">f4")})


def test_finder_bitmaps_and_snapshot_topics():
    row = M.finder_mask([0, 9, 255], 256)
    assert row.dtype == np.uint8 and row.shape == (32,) and M.finder_ids(row) == [0, 9, 255]
    assert row[1] == 0b10  # agent 9: bit 1 of byte 1
    assert [M.finder_bytes(n) for n in (1, 8, 9, 1024)] == [1, 1, 2, 128]
    with pytest.raises(ValueError, match="256"):
        M.finder_mask([3, 256], 256)
    # SUB matches by prefix: no agent's topic may start another's (sorted, a prefix would sit right before)
    topics = sorted(M.snapshot_topic(r) for r in range(10_000))
    assert not any(b.startswith(a) for a, b in zip(topics, topics[1:]))
    # receivers bind F from run.agents: a snapshot of a run with another number of agents is refused
    body = {"created_at": 1.0, "clock": 50, "receiver": 0}
    snap = decode(encode(M.SNAPSHOT, body, {"keys": np.ones((2, 8), np.float32), "scores": np.ones(2, np.float32),
                                            "finders": np.zeros((2, M.finder_bytes(16)), np.uint8)}), LIMIT)
    validate(snap, {"K": 8, "F": M.finder_bytes(16)}, (M.SNAPSHOT,))
    with pytest.raises(ProtocolError) as e:
        validate(snap, {"K": 8, "F": M.finder_bytes(8)}, (M.SNAPSHOT,))
    assert e.value.cause == "shape"


def test_validate_rejects_wrong_shape_dtype_kind_and_nan():
    body, arrays = _fragment()
    msg = decode(encode(M.FRAGMENT, body, arrays), LIMIT)
    with pytest.raises(ProtocolError) as e:
        validate(msg, {**CTX, "A": 5})
    assert e.value.cause == "shape"
    bad = dict(arrays, actions=arrays["actions"].astype(np.int32))
    with pytest.raises(ProtocolError) as e:
        validate(decode(encode(M.FRAGMENT, body, bad), LIMIT), CTX)
    assert e.value.cause == "dtype"
    with pytest.raises(ProtocolError) as e:
        validate(msg, CTX, kinds := (M.HEARTBEAT,))
    assert e.value.cause == "kind" and kinds
    floats = arrays["floats"].copy()
    floats[M.FRAGMENT_FLOATS.index("rewards"), 1, 0] = np.nan         # one reward of one step
    nan = dict(arrays, floats=floats)
    with pytest.raises(ProtocolError) as e:
        validate(decode(encode(M.FRAGMENT, body, nan), LIMIT), CTX)
    assert e.value.cause == "value"
    with pytest.raises(ProtocolError) as e:
        validate(decode(encode(M.FRAGMENT, {**body, "env_steps": "many"}, arrays), LIMIT), CTX)
    assert e.value.cause == "schema"
    with pytest.raises(ProtocolError) as e:                            # a block with a row too few
        validate(decode(encode(M.FRAGMENT, body, dict(arrays, flags=arrays["flags"][1:])), LIMIT), CTX)
    assert e.value.cause == "shape"


def test_fragment_columns_are_views_of_the_blocks_by_name():
    _, arrays = _fragment()
    cols = M.fragment_columns(arrays)
    assert set(cols) == set(M.FRAGMENT_COLUMNS) and len(M.FRAGMENT_COLUMNS) == 21
    cols["m"][0, 1] = 0.25
    cols["guided"][2, 0] = True
    cols["boot_mask_values"][1] = 3.0
    assert arrays["floats"][M.FRAGMENT_FLOATS.index("m"), 0, 1] == 0.25
    assert arrays["flags"][M.FRAGMENT_FLAGS.index("guided"), 2, 0]
    assert arrays["boot"][1, 1] == 3.0


@pytest.mark.parametrize("obs_dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("obs_size", [5, 2000])
def test_finite_extremes_pass_and_any_nan_or_infinity_fails_without_warnings(obs_dtype, obs_size):
    """Finiteness of a small array is proved by one sum, which the largest finite values overflow (they must
    still pass) and an infinity of each sign turns into NaN (it must still fail); a large array (here 3 x 2 x
    2000 observations) is checked element-wise. numpy warns about nothing."""
    body, arrays = _fragment(obs=(obs_size,))
    ctx = {**CTX, "obs_dtype": obs_dtype, "obs": (obs_size,)}
    huge = dict(arrays, obs=np.full_like(arrays["obs"], np.finfo(obs_dtype).max, dtype=obs_dtype),
                floats=np.full_like(arrays["floats"], -np.finfo(np.float32).max))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(decode(encode(M.FRAGMENT, body, huge), LIMIT), ctx)
        for bad in (np.nan, np.inf, -np.inf, "both"):
            obs = huge["obs"].copy()
            if bad == "both":
                obs[0, 0, 0], obs[-1, -1, -1] = np.inf, -np.inf
            else:
                obs[1, 1, 2] = bad
            with pytest.raises(ProtocolError) as e:
                validate(decode(encode(M.FRAGMENT, body, dict(huge, obs=obs)), LIMIT), ctx)
            assert e.value.cause == "value" and "obs" in str(e.value)


def test_config_defaults_validate_and_every_field_has_help():
    cfg = C.validate(C.Config())
    assert cfg.env.copies == 4 and cfg.broker.snapshot_every == 50 and cfg.mask.tau == 0.5
    ref = C.describe()
    assert "ppo.lr" in ref and "| `mask.tau` | `0.5` |" in ref


@pytest.mark.parametrize("override,fragment", [
    ("ppo.lr=-1", "ppo.lr=-1.0: must be > 0.0"),
    ("comm.topology=mesh", "allowed values are full, ring"),
    ("ppo.lrr=1", "unknown config field 'ppo.lrr'"),
    ("nosection.x=1", "unknown config section"),
    ("run.agents=2.5", "run.agents=2.5: expected an integer"),
    ("env.name=nope", "env.name='nope'"),
    ("ppo.minibatches=7", "must divide"),
    ("net.learner_weights_port=5555", "ports must differ"),
    ("actor.eps_min=0.9", "eps_min"),
    ("ppo.is_floor=3", "ppo.is_floor=3.0 must be <= ppo.is_clip=2.0"),
])
def test_bad_config_names_field_value_and_rule(override, fragment):
    with pytest.raises(C.ConfigError) as e:
        C.load(overrides=[override])
    assert fragment in str(e.value)


def test_yaml_overrides_and_environment(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ppo:\n  lr: 0.001\nrun:\n  agents: 3\n")
    cfg = C.load(p, ["run.agents=2"], environ={"MAGICMASK_BROKER_HOST": "10.0.0.5"})
    assert cfg.ppo.lr == 0.001 and cfg.run.agents == 2 and cfg.broker_addr() == "10.0.0.5"
    C.save(cfg, tmp_path / "saved.yaml")
    again = C.load(tmp_path / "saved.yaml", environ={})
    assert again == cfg
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load(tmp_path / "missing.yaml")


def test_docs_config_reference_is_current():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md").read_text()
    assert C.describe().strip() in doc, "docs/CONFIG.md is stale: regenerate it with `magicmask config --reference`"
