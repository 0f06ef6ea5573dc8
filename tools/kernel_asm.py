"""What the prompt kernels (and, that they compile, the decode step's small ones) compile to
for an H100/H200 (sm_90), on any machine (no GPU):
counts of Hopper's tensor-core (wgmma), async copy (cp.async, TMA) and plain global load
instructions in their PTX, compiled with the specializations a real launch gets (16-byte
aligned pointers, sizes divisible by 16, unit strides as constants). Without those hints
Triton cannot vectorize the loads and does not pipeline them at all.

    python3 -m tools.kernel_asm [--out bench-out/kernel-asm.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from inference.runtime.kernels import kv_write, moe, moe_prompt, prompt_attention, softmax

INSTRUCTIONS = ("wgmma.mma_async", "mma.sync", "cp.async.cg", "cp.async.bulk", "ld.global")


def compile_for_hopper(fn, types: dict, constants: dict, divisible: list[str], warps: int,
                       stages: int) -> dict:  # fmt: skip
    """PTX instruction counts of the Triton kernel `fn` compiled for sm_90: `types` of its
    runtime arguments, `constants` for the rest, `divisible` ones known multiples of 16."""
    names = fn.arg_names
    compiled = triton.compile(
        ASTSource(
            fn=fn,
            signature={n: "constexpr" if n in constants else types[n] for n in names},
            constexprs={(names.index(n),): v for n, v in constants.items()},
            attrs={(names.index(n),): [["tt.divisibility", 16]] for n in divisible},
        ),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages},
    )
    ptx = compiled.asm["ptx"]
    return {name: ptx.count(name) for name in INSTRUCTIONS}


def experts_kernels() -> dict:
    """The prompt experts' two kernels as prompt_experts launches them (bf16 weights)."""
    types = dict.fromkeys(("x_ptr", "act_ptr", "w_ptr", "out_ptr"), "*bf16") | dict.fromkeys(
        ("tile_expert_ptr", "first_tile_ptr", "starts_ptr", "counts_ptr"), "*i32"
    ) | {"scale_ptr": "*fp32", "order_ptr": "*i64"} | dict.fromkeys(
        ("num_experts", "hidden", "inter", "stride_e", "stride_n"), "i32"
    )  # fmt: skip
    result = {}
    for name, fn, blocks in (
        ("prompt gate_up (bf16)", moe_prompt._prompt_gate_up_kernel,
         moe_prompt.GATE_UP_BLOCKS),
        ("prompt down (bf16)", moe_prompt._prompt_down_kernel,
         moe_prompt.DOWN_BLOCKS),
    ):  # fmt: skip
        block_m, block_n, block_k, warps, stages = blocks
        constants = {"TOP_K": 8, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k,
                     "SCALED": False, "F32": False, "stride_k": 1}  # fmt: skip
        constants = {k: v for k, v in constants.items() if k in fn.arg_names}
        divisible = [n for n in fn.arg_names if n in types and n != "scale_ptr"]
        result[name] = compile_for_hopper(fn, types, constants, divisible, warps, stages)
    return result


def attention_kernel() -> dict:
    """The prompt attention kernel for a sliding layer (heads of 256, the prefix apart)."""
    fn = prompt_attention._prompt_attention_kernel
    types = {n: "i32" for n in fn.arg_names if n.startswith("stride_")} | dict.fromkeys(
        ("q_ptr", "k_ptr", "v_ptr", "pk_ptr", "pv_ptr", "out_ptr"), "*bf16"
    ) | {"ends_ptr": "*i32", "length": "i32", "prefix": "i32", "total": "i32",
         "window": "i32", "kv_heads": "i32", "scale": "fp32"}  # fmt: skip
    block_m, block_n, warps, stages = prompt_attention.BLOCKS[256]
    constants = {"GROUP": 2, "HEAD_DIM": 256, "BLOCK_D": 256, "BLOCK_M": block_m,
                 "BLOCK_N": block_n, "CAUSAL": False, "WINDOWED": False,
                 "F32": False}  # fmt: skip
    # sizes that vary per prefill are not specialized (do_not_specialize), nor is scale
    divisible = [n for n in types if n not in ("length", "prefix", "total", "stride_eb",
                                                "scale", "kv_heads")]  # fmt: skip
    past_window = constants | {"WINDOWED": True}  # a follow-up longer than the window
    return {
        "prompt attention, sliding (bf16)": compile_for_hopper(
            fn, types, constants, divisible, warps, stages),
        "prompt attention, sliding past the window (bf16)": compile_for_hopper(
            fn, types, past_window, divisible, warps, stages),
    }  # fmt: skip


def decode_kernels() -> dict:
    """The decode step's small kernels as a 64-sequence step launches them (and the
    router's kernel, as prompts do): they must compile for Hopper (no tensor cores
    expected)."""
    softmax_args = dict.fromkeys(("own_ptr", "own_out_ptr", "kept_ptr", "kept_out_ptr"),
                                 "*bf16") | {"mask_ptr": "*u8", "scale2": "fp32"} | dict.fromkeys(
        ("own_len", "kept_len", "batch", "kv_heads", "group", "stride_o", "stride_m",
         "stride_oo", "stride_k", "stride_ko"), "i32")  # fmt: skip
    one_part = {"BLOCK_K": 1, "KEPT": False}
    router = {"scores_ptr": "*bf16", "scale_ptr": "*bf16", "weights_ptr": "*fp32",
              "index_ptr": "*i64", "tokens": "i32", "num_experts": "i32"}  # fmt: skip
    choice = {"BLOCK_E": 128, "TOP_K": 8, "BLOCK_K": 8}
    cases = (
        ("decode softmax, sliding (bf16)", softmax._masked_softmax_kernel, softmax_args,
         one_part | {"BLOCK_O": 1024}, 4),
        ("decode softmax, global at 4,096 (bf16)", softmax._masked_softmax_kernel,
         softmax_args, one_part | {"BLOCK_O": 4096}, 8),
        ("decode softmax after the kept prefix (bf16)", softmax._masked_softmax_kernel,
         softmax_args, {"BLOCK_O": 1024, "BLOCK_K": 512, "KEPT": True}, 4),
        ("KV write, sliding (bf16)", kv_write._write_kernel,
         dict.fromkeys(("keys_ptr", "values_ptr", "key_ptr", "value_ptr"), "*bf16")
         | dict.fromkeys(("rows_ptr", "index_ptr"), "*i64")
         | dict.fromkeys(("heads", "stride_cs", "stride_ch", "stride_cl", "stride_kb",
                          "stride_kh", "stride_vb", "stride_vh"), "i32"),
         {"HEAD_DIM": 256, "BLOCK_D": 256}, 4),
        ("router, a token a program", moe.routing._route_kernel, router, choice, 4),
        ("router and grouping, 64 tokens", moe.routing._route_group_kernel,
         router | dict.fromkeys(("counts_ptr", "starts_ptr", "cursor_ptr", "order_ptr",
                                 "position_ptr"), "*i32"),
         choice | {"BLOCK_T": 64}, 8),
    )  # fmt: skip
    return {
        name: compile_for_hopper(fn, types, constants, [n for n in types if n.endswith("_ptr")],
                                 warps, 1)
        for name, fn, types, constants, warps in cases
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out/kernel-asm.json"))
    args = parser.parse_args()
    report = {**experts_kernels(), **attention_kernel(), **decode_kernels()}
    for name, counts in report.items():
        print(f"{name:<34} " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
