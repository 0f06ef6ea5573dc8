"""Stand-ins for parts of transformers' Gemma 4 that the batching engine installs: attention
(fast_ops), decoder layers (layers), the vision tower (vision) and FP8 experts."""
