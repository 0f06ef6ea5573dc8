"""Tools around the engine for developers and operators: the benchmark (`travelbot bench`),
the FP8 check (`travelbot check-fp8`), the tiny random-weight checkpoint the tests load
(`travelbot tiny-checkpoint`) and drawn sample photos (`travelbot sample-image`). The bot
and the engine never import them."""
