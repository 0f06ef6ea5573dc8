"""Triton kernels of the batching engine, one module per kernel family.

Importing one needs Triton (and registers its torch ops); each has `works_on(device)`, the
start-up check that compiles its kernels and compares them with a torch reference.
"""
