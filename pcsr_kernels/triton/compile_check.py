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


# The three variants' widths: D, heavy hidden, light hidden, classifier hidden.
VARIANTS = {"fsrcnn": (48, 58, 10, []), "carn": (52, 74, 20, [10]), "srresnet": (58, 170, 40, [20])}


def _configs(quick: bool):
    """(name, kernel, arg types, constexprs, num_warps) for every kernel the launchers use."""
    from . import adm, classify, config, dense, refine, route
    from .mlp import BK
    from .pack import hidden_tiling, real_cols
    from .tc_mlp import chunking

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
            ("refine uint8", refine._refine_kernel, dict(cls_ptr="*u8"), dict(NH=1, BY=8, BX=64, IDX64=False), 4),
            ("refine int64", refine._refine_kernel, dict(cls_ptr="*i64"), dict(NH=1, BY=8, BX=64, IDX64=True), 4)]
    # the classify op (probabilities): classifiers of FSRCNN-PCSR (one Linear), CARN-PCSR, SRResNet-PCSR
    t = dict(iy_ptr="*i64", ix_ptr="*i64", cls_ptr="*i64", cy=f32, cx=f32)
    for hidden in ([], [10], [20]):
        hp, bn = hidden_tiling(hidden[0]) if hidden else (2, 0)
        c = dict(M=2, NH=1, ONE_LAYER=not hidden, BM=BM, HP=hp, BN=max(bn, 16), BK=BK, OUT_P=16 if hidden else 2,
                 REAL=real_cols([bn] * (hp // bn), hidden[0]) if hidden else 0, PREC="ieee", WRITE_PROBS=True,
                 WRITE_CLASSES=False, WRITE_HEAVY=False)
        out.append((f"classify hidden={hidden}", classify._classify_kernel, t, c, config.mlp_num_warps(bn)))
    # the dense pass and the branch kernels at the variants' widths, per precision
    precs = ["ieee", "bf16"] if quick else ["ieee", "tf32x3", "tf32", "bf16"]
    geo = dict(iy_ptr="*i64", ix_ptr="*i64", by0_ptr="*i64", by1_ptr="*i64", bx0_ptr="*i64", bx1_ptr="*i64",
               cy=f32, cx=f32)
    for vname, (D, heavy, light, cls_hidden) in VARIANTS.items():
        if quick and vname != "srresnet":
            continue
        cc = chunking(cls_hidden[0]) if cls_hidden else (2, 0, 0, 0)
        lc = chunking(light)
        for prec in precs:
            wt = "*bf16" if prec == "bf16" else "*fp32"
            t = dict(geo, pc_ptr="*fp32", pu_ptr=wt, lwmid_ptr=wt, lwlast_ptr=wt, cls_in_ptr="*i64",
                     cls64_ptr="*i64", cls8_ptr="*u8", cnt_ptr="*i32", list_ptr="*i32", klogc_ptr="*fp32")
            for mode in ((0,) if quick or prec != "ieee" else (0, 1, 2)):
                BMd, nw = config.dense_launch(sum(lc) if mode != 2 else 0, prec)
                c = dict(M=2, NH=1, MODE=mode, BM=BMd, CC0=cc[0], CC1=cc[1], CC2=cc[2], CC3=cc[3],
                         C_OUT=16 if cls_hidden else 2, C_ONE=not cls_hidden, LC0=lc[0], LC1=lc[1], LC2=lc[2],
                         LC3=lc[3], L_OUT=16, L_ONE=False, PREC=prec, IDX64=False,
                         C_REAL=real_cols(cc, cls_hidden[0]) if cls_hidden else 0, L_REAL=real_cols(lc, light))
                out.append((f"dense {vname} mode={mode} {prec}", dense._dense_kernel, t, c, nw))
            for wd in (heavy, light):
                out.append(_branch_config(f"branch {vname} {'heavy' if wd == heavy else 'light'} {prec}", wd, prec,
                                          dict(geo, list_ptr="*i32", cnt_ptr="*i32", pu_ptr=wt, wmid_ptr=wt,
                                               wlast_ptr=wt), J=0, IDX64=False))
    out.append(_branch_config("branch srresnet heavy ieee int64", 170, "ieee",
                              dict(geo, list_ptr="*i64", cnt_ptr="*i64"), J=1, IDX64=True))
    return out


def _branch_config(name, width, prec, types, **c):
    """A branch kernel's configuration as :func:`.branch.launch_branch` chooses it (every
    hidden layer ``width`` wide, as in the variants)."""
    from . import branch
    from .tc_mlp import chunking

    hc = chunking(width)
    lc = branch.launch_config(hc, False, width, prec)
    nw = lc.pop("num_warps")
    c = dict(c, **lc, C0=hc[0], C1=hc[1], C2=hc[2], C3=hc[3], OUT_P=16, ONE=False, PREC=prec)
    return (name + (" scratch" if lc["SCRATCH"] else ""), branch._branch_kernel, types, c, nw)


def _sass_counts(cubin: bytes) -> dict:
    """Tensor-core and wide-load instruction counts of a cubin (``cuobjdump -sass``)."""
    import triton

    exe = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(exe):
        return {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([exe, "-sass", path], capture_output=True, text=True).stdout
    return {"HGMMA": len(re.findall(r"\bHGMMA\b", sass)), "HMMA": len(re.findall(r"\bHMMA\b", sass)),
            "LDG.128": sass.count("LDG.E.128"), "LDL": len(re.findall(r"\bLDL\b", sass))}


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


def _select(configs, pattern: str | None):
    return [c for c in configs if pattern is None or re.search(pattern, c[0])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="compile the pcsr Triton kernels for a GPU without one")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90)")
    p.add_argument("--quick", action="store_true", help="one configuration per kernel, the widest branch only")
    p.add_argument("--only", default=None, help="regular expression: compile the kernels whose name matches")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("compile_check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    print(f"triton {triton.__version__}, sm_{args.arch}")
    bad = 0
    for name, kernel, types, constexprs, num_warps in _select(_configs(args.quick), args.only):
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
        sass = " ".join(f"{k}={v}" for k, v in _sass_counts(ck.asm["cubin"]).items())
        print(f"{'ok  ' if ok else 'BAD '} {name:36s} warps={num_warps} smem={smem:6d} regs={regs} spill={spill} "
              f"{sass} ({time.time() - t0:.0f} s)", flush=True)
    print("all kernels compile" if not bad else f"{bad} kernel(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
