"""Tools around the engine for developers and operators: the benchmark (`travelbot bench`),
the FP8 check (`travelbot check-fp8`), the tiny random-weight checkpoint the tests load
(`travelbot tiny-checkpoint`) and drawn sample photos (`travelbot sample-image`); and the
GPU tools, run as `python3 -m tools.NAME`: `profile_decode` (where a decode step and a
prefill spend their time), `greedy_tokens` (greedy tokens before and after a change),
`check_kernels` (each kernel family against its reference, timed, its tiles swept) and
`kernel_asm` (the kernels' PTX for Hopper, no GPU needed). Each runs on the CPU in
tests/tools. The bot and the engine never import them."""
