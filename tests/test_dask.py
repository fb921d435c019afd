"""``cyconv.dask``: convolutions and pooling of chunked Dask arrays equal the in-memory ops.

Every case builds one NumPy input, runs the in-memory cyconv op on it, and runs the
``cyconv.dask`` op on the same values chunked along the batch, along each spatial dim
(with uneven chunks, chunks smaller than the kernel and a chunk of one element) and
along all of them at once.  Every output element is computed by the same kernel on the
same values, but a kernel may order a sum's terms differently at a chunk's edge (a
vector tail, a narrower BLAS matrix), so convolutions and average pooling are compared
with the suite's parity tolerance; max pooling, which does no arithmetic, bit for bit.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cyconv
from conftest import assert_close, assert_identical

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
cdask = pytest.importorskip("cyconv.dask")


@pytest.fixture(autouse=True, scope="module")
def _sync_scheduler():
    # The synchronous scheduler by default: the machine's cores are shared, and the
    # chunk logic is what is under test.  test_schedulers covers the others.
    with dask.config.set(scheduler="synchronous"):
        yield


SIZES = {1: (23,), 2: (17, 14), 3: (11, 9, 10)}


def _chunkings(nd):
    """name -> chunks of an (N=3, C=4, *SIZES[nd]) input."""
    size = SIZES[nd]
    out = {"batch": (1, 4) + size}
    uneven = {23: (6, 1, 9, 7), 17: (5, 2, 10), 14: (4, 1, 9), 11: (4, 1, 6), 9: (2, 7),
              10: (3, 3, 4)}
    for i, n in enumerate(size):
        chunks = [3, 4] + list(size)
        chunks[2 + i] = uneven[n]
        out[f"dim{i}"] = tuple(chunks)
    out["all"] = ((2, 1), (4,)) + tuple(uneven[n] for n in size)
    return out


def _dask(x, chunks):
    return da.from_array(x, chunks=chunks)


def _rand(shape, dtype, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


def _close(got, expected, what=""):
    assert_close(got, expected, expected.dtype, kind="parity", what=what)


def _compare(got, expected, dtype, exact, what):
    """Bit-identical when ``exact``, else within the parity tolerance."""
    assert isinstance(got, np.ndarray)
    if exact:
        assert_identical(got, expected, what)
    else:
        assert_close(got, expected, dtype, kind="parity", what=what)


# -- convolutions -------------------------------------------------------------------------------

CONV_PARAMS = [
    dict(),
    dict(padding="same"),
    dict(padding="same", stride=2),
    dict(padding="same", stride=3, dilation=2),
    dict(stride=2, padding=1, dilation=2),
    dict(padding="valid", stride=(2, 1, 3)),
    dict(padding=((2, 0), (0, 3), (1, 1))),
    dict(groups=2, padding=1),
]


def _per_dim(kw, nd):
    """Trim 3-entry tuples of a parameter set to nd entries."""
    out = {}
    for k, v in kw.items():
        out[k] = tuple(v[:nd]) if isinstance(v, tuple) and len(v) == 3 else v
    return out


def _kid(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "") or "default"


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", CONV_PARAMS, ids=[_kid(k) for k in CONV_PARAMS])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_equals_in_memory(nd, kw, dtype, algorithm):
    kw = _per_dim(kw, nd)
    groups = kw.get("groups", 1)
    k = {1: (5,), 2: (3, 4), 3: (3, 3, 2)}[nd]
    x, w = _rand((3, 4) + SIZES[nd], dtype, 0), _rand((6, 4 // groups) + k, dtype, 1)
    b = _rand((6,), dtype, 2)
    expected = getattr(cyconv, f"conv{nd}d")(x, w, b, **kw, algorithm=algorithm)
    for name, chunks in _chunkings(nd).items():
        y = getattr(cdask, f"conv{nd}d")(_dask(x, chunks), w, b, **kw, algorithm=algorithm)
        assert y.shape == expected.shape and y.dtype == expected.dtype
        _compare(y.compute(), expected, dtype, False,
                 f"conv{nd}d {kw} chunks {name} {chunks}")


CONVT_PARAMS = [
    dict(),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=3, dilation=2, padding=2, output_padding=2),
    dict(stride=(4, 1, 2), padding=(0, 1, 1)),            # stride > kernel: gaps
    dict(groups=2, stride=2),
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", CONVT_PARAMS, ids=[_kid(k) for k in CONVT_PARAMS])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_equals_in_memory(nd, kw, dtype, algorithm):
    kw = _per_dim(kw, nd)
    groups = kw.get("groups", 1)
    k = {1: (3,), 2: (3, 2), 3: (2, 3, 3)}[nd]
    x, w = _rand((3, 4) + SIZES[nd], dtype, 0), _rand((4, 6 // groups) + k, dtype, 1)
    b = _rand((6,), dtype, 2)
    expected = getattr(cyconv, f"conv_transpose{nd}d")(x, w, b, **kw, algorithm=algorithm)
    for name, chunks in _chunkings(nd).items():
        y = getattr(cdask, f"conv_transpose{nd}d")(_dask(x, chunks), w, b, **kw,
                                                   algorithm=algorithm)
        assert y.shape == expected.shape and y.dtype == expected.dtype
        _compare(y.compute(), expected, dtype, False,
                 f"conv_transpose{nd}d {kw} chunks {name} {chunks}")


def test_output_chunks_follow_the_input_chunks():
    x = _dask(np.zeros((2, 3, 40, 30), np.float32), (1, 3, (10, 10, 20), (8, 22)))
    w = np.zeros((5, 3, 3, 3), np.float32)
    assert cdask.conv2d(x, w, padding="same").chunks == ((1, 1), (5,), (10, 10, 20), (8, 22))
    assert cdask.conv2d(x, w, padding="same", stride=2).chunks == ((1, 1), (5,), (5, 5, 10),
                                                                   (4, 11))
    wt = np.zeros((3, 5, 4, 4), np.float32)   # the usual x2 upsampling: k4 s2 p1
    assert cdask.conv_transpose2d(x, wt, stride=2, padding=1).chunks == (
        (1, 1), (5,), (20, 20, 40), (16, 44))
    assert cdask.max_pool2d(x, 2).chunks == ((1, 1), (3,), (5, 5, 10), (4, 11))


def test_chunks_entirely_in_the_padding_or_out_of_reach_hold_the_bias():
    """Output chunks whose windows lie in the padding (conv), or that no input reaches
    (transposed conv with stride > kernel), are the bias, as in memory."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 12)).astype(np.float64)
    w = rng.uniform(-1, 1, (4, 3, 1)).astype(np.float64)
    b = np.array([1.0, -2.0, 3.0, 0.5])
    dx = _dask(x, (2, 3, (1, 1, 1, 9)))
    y = cdask.conv1d(dx, w, b, padding=7)
    assert len(y.chunks[2]) > 3
    got = y.compute()
    _close(got, cyconv.conv1d(x, w, b, padding=7))
    assert np.array_equal(got[..., :7], np.broadcast_to(b[:, None], (2, 4, 7)))
    wt = rng.uniform(-1, 1, (3, 4, 1)).astype(np.float64)
    yt = cdask.conv_transpose1d(dx, wt, b, stride=5, output_padding=4)
    assert len(yt.chunks[2]) == 4
    got = yt.compute()
    _close(got, cyconv.conv_transpose1d(x, wt, b, stride=5, output_padding=4))
    gaps = np.ones(got.shape[-1], bool)
    gaps[::5] = False
    assert np.array_equal(got[..., gaps], np.broadcast_to(b[:, None], (2, 4, gaps.sum())))


# -- pooling ------------------------------------------------------------------------------------

POOL_PARAMS = [
    ("max", dict(kernel_size=2)),
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("max", dict(kernel_size=2, stride=3, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=2)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True,
                 count_include_pad=False)),
    ("avg", dict(kernel_size=3, stride=1, padding=1, divisor_override=5)),
]


# avg_pool1d has no divisor_override (as in PyTorch)
POOL_CASES = [(nd, kind, kw) for nd in (1, 2, 3) for kind, kw in POOL_PARAMS
              if nd > 1 or "divisor_override" not in kw]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES,
                         ids=[f"{kind}_pool{nd}d-{_kid(kw)}" for nd, kind, kw in POOL_CASES])
def test_pool_equals_in_memory(case, dtype):
    nd, kind, kw = case
    x = _rand((3, 4) + SIZES[nd], dtype, 0)
    x.reshape(-1)[7] = np.nan           # a NaN travels to its windows only
    if kind == "max":
        x[0, 1, ...] = -np.inf          # an all -inf plane
    name = f"{kind}_pool{nd}d"
    expected = getattr(cyconv, name)(x, **kw)
    chunkings = _chunkings(nd)
    chunkings["channels"] = ((3,), (1, 3)) + SIZES[nd]      # pooling keeps channel chunks
    for cname, chunks in chunkings.items():
        y = getattr(cdask, name)(_dask(x, chunks), **kw)
        assert y.shape == expected.shape
        _compare(y.compute(), expected, dtype, kind == "max",
                 f"{name} {kw} chunks {cname} {chunks}")


# -- forms of input -------------------------------------------------------------------------------

def test_unbatched_and_channel_chunked_inputs():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (6, 13, 11)).astype(np.float32)
    w = rng.uniform(-1, 1, (5, 6, 3, 3)).astype(np.float32)
    y = cdask.conv2d(_dask(x, (2, 5, 4)), w, padding="same", algorithm="direct")
    assert y.shape == (5, 13, 11) and y.chunks == ((5,), (5, 5, 3), (4, 4, 3))
    _close(y.compute(), cyconv.conv2d(x, w, padding="same", algorithm="direct"))
    yb = cdask.conv2d(_dask(x[None], (1, 2, 5, 4)), w, algorithm="direct")
    assert yb.chunks[1] == (5,)          # the channel chunks were merged
    _close(yb.compute(), cyconv.conv2d(x[None], w, algorithm="direct"))
    p = cdask.max_pool2d(_dask(x, (2, 5, 4)), 3, 2, 1)
    assert p.chunks[0] == (2, 2, 2)      # pooling keeps them
    assert_identical(p.compute(), cyconv.max_pool2d(x, 3, 2, 1))


def test_empty_batch():
    x = _dask(np.zeros((0, 2, 9), np.float64), (1, 2, 4))
    y = cdask.conv1d(x, np.ones((3, 2, 3)), padding=1)
    assert y.shape == (0, 3, 9)
    assert y.compute().shape == (0, 3, 9)


def test_each_output_chunk_reads_only_its_halo():
    """Computing one output chunk touches only the input chunks its windows reach, and
    of the neighbours only the halo slices travel."""
    calls = []

    def record(block, block_info=None):
        calls.append(block_info[0]["chunk-location"][2])
        return block

    base = da.from_array(np.arange(2 * 3 * 40.0).reshape(2, 3, 40), chunks=(2, 3, 8))
    x = base.map_blocks(record, dtype=base.dtype)
    w = np.ones((1, 3, 3))
    y = cdask.conv1d(x, w, padding=1)
    assert y.chunks[2] == (8,) * 5
    y.blocks[0, 0, 2].compute()
    assert sorted(calls) == [1, 2, 3]
    calls.clear()
    y.blocks[0, 0, 0].compute()
    assert sorted(calls) == [0, 1]
    graph = dict(y.__dask_graph__())
    halos = [v for k, v in graph.items() if isinstance(k, tuple) and "halo" in k[0]]
    # output chunk j reads one element from each neighbour: 2 * 5 - 2 halo slices
    assert len(halos) == 8
    assert all(v[2][2].stop - v[2][2].start == 1 for v in halos)


def test_schedulers_agree():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 3, 16, 15)).astype(np.float64)
    w = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float64)
    expected = cyconv.conv2d(x, w, stride=2, padding="same", algorithm="direct")
    y = cdask.conv2d(_dask(x, (1, 3, 5, 6)), w, stride=2, padding="same", algorithm="direct")
    sync = y.compute(scheduler="synchronous")
    _close(sync, expected)
    assert_identical(y.compute(scheduler="threads"), sync, "threads vs synchronous")


# -- errors ----------------------------------------------------------------------------------------

def test_errors():
    x = _dask(np.zeros((1, 3, 8, 8), np.float32), (1, 3, 4, 4))
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"conv2d: input must be a dask.array.Array, got "
                                        r"ndarray; use cyconv.conv2d for in-memory arrays"):
        cdask.conv2d(np.zeros((1, 3, 8, 8), np.float32), w)
    with pytest.raises(TypeError, match=r"conv2d: weight must be a NumPy array, got Array; "
                                        r"call .compute\(\) first"):
        cdask.conv2d(x, da.from_array(w))
    with pytest.raises(TypeError, match="conv2d: input is float32 but weight is float64"):
        cdask.conv2d(x, w.astype(np.float64))
    with pytest.raises(ValueError, match=r"conv2d: groups=2 does not divide out_channels=3"):
        cdask.conv2d(x, np.zeros((3, 3, 3, 3), np.float32), groups=2)
    with pytest.raises(ValueError, match=r"conv_transpose2d: padding='same' is not supported"):
        cdask.conv_transpose2d(x, np.zeros((3, 2, 3, 3), np.float32), padding="same")
    with pytest.raises(ValueError, match=r"max_pool2d: padding \(2, 2\) must be at most half"):
        cdask.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match="conv2d: unknown algorithm 'fast'"):
        cdask.conv2d(x, w, algorithm="fast")
    unknown = x[x[:, 0, 0, 0] >= 0]      # a boolean mask gives unknown chunk sizes
    with pytest.raises(ValueError, match=r"conv2d: input has unknown chunk sizes"):
        cdask.conv2d(unknown, w)


def test_import_without_dask_names_the_fix():
    code = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None           # as if Dask were not installed
        import cyconv
        try:
            import cyconv.dask
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ImportError: cyconv.dask needs Dask" in res.stdout
    assert "pip install cyconv[dask]" in res.stdout


# -- dask.distributed ----------------------------------------------------------------------------

def test_distributed_local_cluster_with_two_worker_processes():
    distributed = pytest.importorskip("distributed")
    start = time.perf_counter()
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 3, 12, 10, 9)).astype(np.float64)
    w = rng.uniform(-1, 1, (4, 3, 3, 3, 3)).astype(np.float64)
    wt = rng.uniform(-1, 1, (4, 2, 2, 2, 2)).astype(np.float64)
    b = rng.uniform(-1, 1, 4).astype(np.float64)
    dx = _dask(x, (1, 3, (5, 7), (4, 6), 9))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        y = cdask.conv3d(dx, w, b, stride=2, padding="same", algorithm="direct")
        pooled = cdask.avg_pool3d(y, 2, ceil_mode=True)
        up = cdask.conv_transpose3d(y, wt, stride=2, algorithm="direct")
        got_y, got_pooled, got_up = client.compute([y, pooled, up], sync=True)
        workers = client.run(lambda: __import__("os").getpid())
    expected = cyconv.conv3d(x, w, b, stride=2, padding="same", algorithm="direct")
    assert len(set(workers.values())) == 2
    _close(got_y, expected, "conv3d")
    _close(got_pooled, cyconv.avg_pool3d(got_y, 2, ceil_mode=True), "avg_pool3d")
    _close(got_up, cyconv.conv_transpose3d(got_y, wt, stride=2, algorithm="direct"),
           "conv_transpose3d")
    # the same graph on the synchronous scheduler: the same bits
    assert_identical(y.compute(scheduler="synchronous"), got_y, "conv3d, synchronous")
    assert time.perf_counter() - start < 60
