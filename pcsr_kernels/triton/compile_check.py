"""Compile every Triton kernel of the package for a GPU, without a GPU.

    python -m pcsr_kernels.triton.compile_check            # sm_90 (H100), all kernels
    python -m pcsr_kernels.triton.compile_check --arch 80 --quick

Triton's interpreter runs what the GPU compiler rejects (dots under 16, tiles that are not
powers of two, shared memory over the SM's budget), so the interpreter tests alone do not
show that the kernels build. This compiles each kernel with the launch parameters the
launchers use (the widths of the three PCSR variants) through ``triton.compile`` for a
``GPUTarget`` (Triton ships ``ptxas``), and reports shared memory and, from ``ptxas -v``,
registers and spills. Exit status 1 if a kernel fails to compile, uses more shared memory
than the architecture has, or spills.

It must run without ``TRITON_INTERPRET=1``: under the interpreter ``@triton.jit`` gives
functions that cannot be compiled.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

SMEM_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


def _configs(quick: bool):
    """(name, module, kernel, arg types, constexprs, num_warps) for every kernel the launchers use."""
    from . import adm, classify, config, refine, route, sort, upsample
    from .mlp import BK
    from .pack import hidden_tiling

    f32, BM = "fp32", config.MLP_BLOCK_M
    out = []
    t = dict(lo_ptr="*fp32", hi_ptr="*fp32", done_ptr="*i32", pcnt_ptr="*i32", out_ptr="*i64", tol=f32)
    for M in ((2,) if quick else (2, 3, 4)):
        MP = max(2, 1 << (M - 1).bit_length())
        out += [(f"adm partial M={M}", adm._lloyd_partial_kernel, t, dict(M=M, MP=MP, SB=1024, SINGLE=False), 4),
                (f"adm update M={M}", adm._lloyd_update_kernel, t, dict(M=M, MP=MP, RB=64, INIT=False, EMPTY_TO_ZERO=M == 2), 4),
                (f"adm label M={M}", adm._adm_label_kernel, t, dict(M=M, MP=MP, SB=1024), 4)]
    out += [("adm partial init", adm._lloyd_partial_kernel, t, dict(M=2, MP=2, SB=1024, SINGLE=True), 4),
            ("adm update init", adm._lloyd_update_kernel, t, dict(M=2, MP=2, RB=64, INIT=True, EMPTY_TO_ZERO=True), 4),
            ("route", route._route_kernel, dict(cls_ptr="*i64", N="i64"), dict(M=2, MP=2, BLOCK=256), 4),
            ("refine", refine._refine_kernel, dict(cls_ptr="*i64", N="i64"), dict(NH=1, BLOCK=1024), 4)]
    t = dict(cls_ptr="*i64", counts_ptr="*i32", base_ptr="*i64", idx_ptr="*i32", N="i32")
    out += [("sort histogram", sort._histogram_kernel, t, dict(M=2, MP=2, SB=1024), 4),
            ("sort scatter", sort._scatter_kernel, t, dict(M=2, MP=2, SB=1024), 4),
            ("sort scatter int64", sort._scatter_kernel, dict(t, idx_ptr="*i64", N="i64"), dict(M=3, MP=4, SB=1024), 4)]
    # classifiers: FSRCNN-PCSR one Linear (52 -> 2), CARN-PCSR 2 x 10, SRResNet-PCSR 2 x 20
    t = dict(iy_ptr="*i64", ix_ptr="*i64", cls_ptr="*i64", wid_ptr="*i32", cy=f32, cx=f32)
    for hidden in ([], [10], [20]):
        hp, bn = hidden_tiling(hidden[0]) if hidden else (2, 0)
        c = dict(M=2, NH=1, ONE_LAYER=not hidden, BM=BM, HP=hp, BN=max(bn, 16), BK=BK, OUT_P=16 if hidden else 2,
                 PREC="ieee", WRITE_PROBS=False, WRITE_CLASSES=True, WRITE_HEAVY=False)
        out.append((f"classify hidden={hidden}", classify._classify_kernel, t, c, config.mlp_num_warps(bn)))
    # branches: heavy 58 / 74 / 170, light 10 / 20 / 40 wide
    t = dict(idx_ptr="*i32", seg_ptr="*i64", iy_ptr="*i64", ix_ptr="*i64", by0_ptr="*i64", by1_ptr="*i64",
             bx0_ptr="*i64", bx1_ptr="*i64", wid_ptr="*i32", cy=f32, cx=f32)
    widths = [170] if quick else [58, 74, 170, 10, 20, 40]
    precs = ["ieee"] if quick else ["ieee", "tf32x3", "tf32"]
    for wd in widths:
        hp, bn = hidden_tiling(wd)
        for prec in (precs if wd == 170 else ["ieee"]):
            c = dict(ONE_LAYER=False, BM=BM, HP=hp, BN=bn, BK=BK, OUT_P=16, PREC=prec)
            out.append((f"upsample width={wd} {prec}", upsample._upsample_branch_kernel, t, c, config.mlp_num_warps(bn)))
    return out


def _ptxas_info(ptx: str, arch: int) -> tuple[int | None, int | None]:
    """(registers, spill-store bytes) from ``ptxas -v``; None when no bundled ptxas reads this PTX."""
    import triton

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for exe in ("ptxas", "ptxas-blackwell"):  # Triton 3.9 needs the second for its PTX version
            path = os.path.join(bindir, exe)
            if not os.path.exists(path):
                continue
            r = subprocess.run([path, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", src, "-o",
                                os.path.join(d, "k.cubin")], capture_output=True, text=True)
            log = r.stdout + r.stderr
            regs = re.search(r"Used (\d+) registers", log)
            spill = re.search(r"(\d+) bytes spill stores", log)
            if regs:
                return int(regs.group(1)), (int(spill.group(1)) if spill else None)
    return None, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="compile the pcsr Triton kernels for a GPU without one")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90)")
    p.add_argument("--quick", action="store_true", help="one configuration per kernel, the widest branch only")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("compile_check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    print(f"triton {triton.__version__}, sm_{args.arch}")
    bad = 0
    for name, kernel, types, constexprs, num_warps in _configs(args.quick):
        t0 = time.time()
        sig = {n: ("constexpr" if n in constexprs else types.get(n, "*fp32" if n.endswith("_ptr") else "i32"))
               for n in kernel.arg_names}
        try:
            ck = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
                                target=GPUTarget("cuda", args.arch, 32), options={"num_warps": num_warps, "num_stages": 1})
        except Exception as e:  # noqa: BLE001 -- report every kernel, fail at the end
            bad += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e)[:2000]}")
            continue
        regs, spill = _ptxas_info(ck.asm["ptx"], args.arch)
        smem = ck.metadata.shared
        ok = smem <= SMEM_LIMIT.get(args.arch, 99 * 1024) and not spill
        bad += not ok
        print(f"{'ok  ' if ok else 'BAD '} {name:34s} warps={num_warps} smem={smem:6d} regs={regs} spill={spill} "
              f"({time.time() - t0:.0f} s)", flush=True)
    print("all kernels compile" if not bad else f"{bad} kernel(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
