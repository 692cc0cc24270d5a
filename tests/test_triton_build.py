"""The Triton kernels build for an H100 (sm_90) ahead of time, on a machine without a GPU: this catches
what the CPU interpreter lets through (types, constexpr use) and checks register use, which decides how
many warps an SM can keep in flight for these memory-bound kernels. Skipped where Triton is not installed
(CI); run it after editing a kernel."""

from __future__ import annotations

import os
import subprocess

import pytest

triton = pytest.importorskip("triton")
pytest.importorskip("triton.backends.nvidia")

# after the skips above: these modules define their kernels only where Triton imports
from scmrl.model import lif_pool_triton  # noqa: E402
from scmrl.model import lif_triton  # noqa: E402

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - another Triton API
    pytest.skip("this Triton has no ahead-of-time compile API", allow_module_level=True)

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _build(fn, signature: dict, constexprs: dict, warps: int, tmp_path) -> dict[str, int]:
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                            target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    cubin = tmp_path / f"{fn.__name__}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    if not os.access(CUOBJDUMP, os.X_OK):
        pytest.skip("this Triton ships no cuobjdump")
    out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if "REG:" in ln)
    return {k: int(v) for k, v in (f.split(":") for f in line.split() if f.split(":")[0] in ("REG", "STACK", "LOCAL"))}


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_lif_and_pool_kernels_build_for_sm90_without_spills(dtype: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    d = f"*{dtype}"
    scalars = {"tau": "fp32", "decay": "fp32", "v_th": "fp32"}
    fwd = {"x_ptr": d, "out_ptr": d, "h_ptr": d, "arg_ptr": "*i8", "P": "i64", "C": "i32", "H": "i32", "W": "i32",
           "OH": "i32", "OW": "i32", "x_step": "i32", "n_in": "i32", "n_out": "i32", "steps": "i32", **scalars,
           "SAVE": "constexpr", "BLOCK_P": "constexpr", "BLOCK_C": "constexpr"}
    bwd = {"g_ptr": d, "arg_ptr": "*i8", "h_ptr": d, "dx_ptr": d, "R": "i32", "C": "i32", "H": "i32", "W": "i32",
           "OH": "i32", "OW": "i32", "n_in": "i32", "n_out": "i32", "steps": "i32", "inv_tau": "fp32", "decay": "fp32",
           "v_th": "fp32", "alpha": "fp32", "THROUGH_TIME": "constexpr", "BLOCK_R": "constexpr", "BLOCK_C": "constexpr"}
    tile, warps = lif_pool_triton._TILE, lif_pool_triton._WARPS
    for save in (True, False):
        use = _build(lif_pool_triton._lif_pool_fwd_kernel, fwd, {"SAVE": save, "BLOCK_P": tile // 32, "BLOCK_C": 32},
                     warps, tmp_path)
        assert use["LOCAL"] == 0 and use["STACK"] == 0 and use["REG"] <= 96, use
    for through_time in (True, False):
        use = _build(lif_pool_triton._lif_pool_bwd_kernel, bwd,
                     {"THROUGH_TIME": through_time, "BLOCK_R": tile // 32, "BLOCK_C": 32}, warps, tmp_path)
        assert use["LOCAL"] == 0 and use["STACK"] == 0 and use["REG"] <= 64, use
    lif_fwd = {"x_ptr": d, "s_ptr": d, "h_ptr": d, "n": "i32", "x_step": "i32", "steps": "i32", **scalars,
               "SAVE_H": "constexpr", "BLOCK": "constexpr"}
    lif_bwd = {"g_ptr": d, "h_ptr": d, "dx_ptr": d, "n": "i32", "steps": "i32", "inv_tau": "fp32", "decay": "fp32",
               "v_th": "fp32", "alpha": "fp32", "THROUGH_TIME": "constexpr", "BLOCK": "constexpr"}
    for fn, sig, consts in ((lif_triton._lif_fwd_kernel, lif_fwd, {"SAVE_H": True, "BLOCK": lif_triton._BLOCK}),
                            (lif_triton._lif_bwd_kernel, lif_bwd, {"THROUGH_TIME": True, "BLOCK": lif_triton._BLOCK})):
        use = _build(fn, sig, consts, 4, tmp_path)
        assert use["LOCAL"] == 0 and use["STACK"] == 0, use
